"""The Docker packaging: docker-compose.yml must be valid and describe the whole stack.

These tests need only the `docker-compose` client (no Docker engine, no database). The project's bootstrap
installs it with apt (`apt-get install docker-compose`); without it the tests fail rather than skip.
"""

import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"

HUB_NUMBERS = (1, 2)
AGENT_PROCESSES = ("worker", "beat", "listener", "metrics", "simulator")
INFRASTRUCTURE_SERVICES = {"postgres", "redis", "kafka"}
MANAGER_PROCESSES = {"web", "consumer", "worker", "beat"}
MANAGER_SERVICES = {"migrate"} | MANAGER_PROCESSES
AGENT_SERVICES = {f"agent{number}-{process}" for number in HUB_NUMBERS for process in AGENT_PROCESSES}
HUB_REDIS_SERVICES = {f"redis-hub{number}" for number in HUB_NUMBERS}
PYTHON_SERVICES = MANAGER_SERVICES | AGENT_SERVICES
REQUIRED_SERVICES = INFRASTRUCTURE_SERVICES | MANAGER_SERVICES | AGENT_SERVICES | HUB_REDIS_SERVICES


def _docker_compose(*args: str) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("docker-compose")
    if executable is None:
        pytest.fail(
            "docker-compose is not on PATH: install it (`apt-get install docker-compose`, as the bootstrap "
            "does) to validate docker-compose.yml"
        )
    return subprocess.run(
        [executable, "-f", str(COMPOSE_FILE), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _resolved_config() -> str:
    result = _docker_compose("config")
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
    return result.stdout


def _service_blocks(config_yaml: str) -> dict[str, list[str]]:
    """Split the normalized output of `docker-compose config` into the lines of each service.

    The output is machine-written YAML with two-space indentation: `services:` at column 0, each service name
    at column 2, and its keys at column 4. The returned lines have those four columns removed.
    """
    blocks: dict[str, list[str]] = {}
    in_services = False
    current: str | None = None
    for line in config_yaml.splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" "))
        if indent == 0:
            in_services = line.rstrip() == "services:"
            current = None
        elif in_services and indent == 2:
            current = line.strip().removesuffix(":").strip("'\"")
            blocks[current] = []
        elif in_services and current is not None:
            blocks[current].append(line[4:])
    return blocks


def _key(block: list[str], key: str) -> list[str]:
    """The value of one top-level key of a service block: the inline value and any nested lines, in order."""
    value: list[str] = []
    inside = False
    for line in block:
        if not line.startswith((" ", "-")):
            name, _, inline = line.partition(":")
            inside = name == key
            if inside and inline.strip():
                value.append(inline.strip())
        elif inside:
            value.append(line.strip())
    return value


def _dependency_conditions(block: list[str]) -> dict[str, str]:
    conditions: dict[str, str] = {}
    dependency = ""
    for line in _key(block, "depends_on"):
        if line.startswith("condition:"):
            conditions[dependency] = line.partition(":")[2].strip()
        else:
            dependency = line.removeprefix("- ").removesuffix(":")
            conditions[dependency] = ""
    return conditions


def test_the_compose_file_is_valid_for_docker_compose() -> None:
    result = _docker_compose("config", "-q")

    assert result.returncode == 0, f"docker-compose.yml does not validate:\n{result.stderr}"


def test_the_compose_file_defines_the_manager_the_infrastructure_and_both_hubs() -> None:
    result = _docker_compose("config", "--services")
    assert result.returncode == 0, f"docker-compose config --services failed:\n{result.stderr}"

    services = set(result.stdout.split())

    assert services >= REQUIRED_SERVICES, f"missing services: {sorted(REQUIRED_SERVICES - services)}"


def test_every_python_service_runs_the_same_image_built_from_the_repository() -> None:
    blocks = _service_blocks(_resolved_config())

    images = {name: tuple(_key(blocks[name], "image")) for name in PYTHON_SERVICES}
    builds = {name: tuple(_key(blocks[name], "build")) for name in PYTHON_SERVICES}

    assert len(set(images.values())) == 1, f"Python services use different images: {images}"
    assert len(set(builds.values())) == 1, f"Python services use different builds: {builds}"
    assert next(iter(images.values())), "the Python services do not name their image"
    assert f"context: {REPO_ROOT}" in next(iter(builds.values())), "the image is not built from the repository root"
    others_with_build = {name for name, block in blocks.items() if _key(block, "build")} - PYTHON_SERVICES
    assert not others_with_build, f"unexpected services built from the repository: {sorted(others_with_build)}"


def test_manager_processes_start_only_after_migrations_and_healthy_infrastructure() -> None:
    blocks = _service_blocks(_resolved_config())

    for name in sorted(MANAGER_PROCESSES):
        conditions = _dependency_conditions(blocks[name])
        assert conditions.get("migrate") == "service_completed_successfully", f"{name}: {conditions}"
        for infrastructure in ("postgres", "kafka"):
            assert conditions.get(infrastructure) == "service_healthy", f"{name}: {conditions}"


def test_each_hub_agent_uses_its_own_redis_and_hub_name() -> None:
    blocks = _service_blocks(_resolved_config())

    for number in HUB_NUMBERS:
        for name in (f"agent{number}-{process}" for process in AGENT_PROCESSES):
            environment = _key(blocks[name], "environment")
            assert f"HUB_NAME: hub{number}" in environment, f"{name}: {environment}"
            assert f"REDIS_URL: redis://redis-hub{number}:6379/0" in environment, f"{name}: {environment}"
            assert "KAFKA_BOOTSTRAP_SERVERS: kafka:9092" in environment, f"{name}: {environment}"


def test_every_python_service_command_names_a_module_or_command_that_exists() -> None:
    """A compose file can be valid YAML and still start processes that do not exist; check each command's target."""
    import importlib.util

    from django.core.management import get_commands

    blocks = _service_blocks(_resolved_config())
    checked = 0
    for service in sorted(PYTHON_SERVICES):
        for command in [" ".join(_key(blocks[service], "command"))]:  # a long command is folded over lines
            for part in command.split("&&"):
                words = part.replace('sh -c "', "").replace('"', "").split()
                if words[:2] == ["python", "-m"]:
                    assert importlib.util.find_spec(words[2]) is not None, f"{service}: no module {words[2]}"
                elif words[:2] == ["python", "manage.py"]:
                    assert words[2] in get_commands(), f"{service}: no management command {words[2]}"
                elif words[:2] == ["celery", "-A"]:
                    assert importlib.util.find_spec(f"{words[2]}.celery") is not None, f"{service}: no app {words[2]}"
                elif words[0] == "gunicorn":
                    module = words[1].partition(":")[0]
                    assert importlib.util.find_spec(module) is not None, f"{service}: no module {module}"
                else:
                    pytest.fail(f"{service}: unrecognised command {part!r}")
                checked += 1
    assert checked >= len(PYTHON_SERVICES)


# The long-running app services whose health compose can see (the listener and simulator have no endpoint of their
# own; the hub's liveness is `ctl status`, checked on its worker).
HEALTHCHECKED_SERVICES = MANAGER_PROCESSES | {f"agent{n}-{p}" for n in HUB_NUMBERS for p in ("worker", "metrics")}


def test_the_app_services_have_healthchecks() -> None:
    blocks = _service_blocks(_resolved_config())

    for name in sorted(HEALTHCHECKED_SERVICES):
        test = _key(blocks[name], "healthcheck")
        assert any(line.startswith("test:") or line.startswith("- ") for line in test), f"{name}: no healthcheck"


def test_no_login_has_a_well_known_default_password() -> None:
    config = _resolved_config()
    blocks = _service_blocks(config)

    migrate_env = _key(blocks["migrate"], "environment")
    assert not any(line.startswith("DJANGO_SUPERUSER_PASSWORD: admin") for line in migrate_env), migrate_env
    assert "--generate-password" in " ".join(_key(blocks["migrate"], "command"))


def test_the_monitoring_profile_runs_prometheus_and_grafana_with_the_shipped_files() -> None:
    result = _docker_compose("--profile", "monitoring", "config")
    assert result.returncode == 0, result.stderr
    blocks = _service_blocks(result.stdout)

    assert {"prometheus", "grafana"} <= set(blocks)
    for service in ("prometheus", "grafana"):
        assert "- monitoring" in _key(blocks[service], "profiles"), f"{service} must be optional (a profile)"
    for service in ("prometheus", "grafana"):
        for line in _key(blocks[service], "volumes") + _key(blocks[service], "source"):
            if line.startswith("source: /"):
                path = Path(line.partition(":")[2].strip())
                assert path.exists(), f"{service} mounts {path}, which is not in the repository"
    rules = REPO_ROOT / "deploy/prometheus/alerts.yml"
    assert rules.name in (REPO_ROOT / "deploy/prometheus/prometheus.yml").read_text()
