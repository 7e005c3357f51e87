"""The wire protocol and the env helpers are shared with the agents: importing them must not pull in Django."""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import globalhub.protocol

REPO = Path(__file__).resolve().parent.parent

PROBE = """
import importlib, json, pkgutil, sys
import globalhub.protocol
names = ["globalhub.envconf"] + [
    info.name for info in pkgutil.walk_packages(globalhub.protocol.__path__, "globalhub.protocol.")
]
for name in names:
    importlib.import_module(name)
print(json.dumps({"imported": names, "modules": sorted(sys.modules)}))
"""


def protocol_modules() -> list[str]:
    return sorted(info.name for info in pkgutil.walk_packages(globalhub.protocol.__path__, "globalhub.protocol."))


def run_probe() -> dict[str, list[str]]:
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    completed = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert completed.returncode == 0, completed.stderr
    result: dict[str, list[str]] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def test_the_probe_covers_every_protocol_module() -> None:
    modules = protocol_modules()
    for expected in ["bundles", "codec", "events", "kafka", "objects", "version"]:
        assert f"globalhub.protocol.{expected}" in modules


def test_importing_the_protocol_and_envconf_imports_no_django_and_no_psycopg() -> None:
    result = run_probe()
    assert set(result["imported"]) == {"globalhub.envconf", *protocol_modules()}
    loaded = set(result["modules"])
    assert "globalhub.protocol.codec" in loaded, "the probe really imported the package"
    assert "globalhub.envconf" in loaded
    django = sorted(name for name in loaded if name == "django" or name.startswith("django."))
    psycopg = sorted(name for name in loaded if name.split(".")[0] in {"psycopg", "psycopg2", "psycopg_c"})
    assert django == []
    assert psycopg == []
