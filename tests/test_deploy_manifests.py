"""The agent's Kubernetes manifests (deploy/agent/), rendered by the pinned kustomize and checked offline.

Each test renders the base and the example overlay with `bin/kustomize build`, then checks the objects against the
Kubernetes 1.33 JSON schemas (bundled by kubernetes-validate) and against this repository's code. No cluster is
needed. The first run builds kustomize with Go, which takes a few minutes; the binary is cached outside the clone.
Without Go these tests fail with bin/kustomize's message. They never skip.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
KUSTOMIZE = REPO_ROOT / "bin" / "kustomize"
RENDERINGS = {
    "base": REPO_ROOT / "deploy" / "agent" / "base",
    "overlay": REPO_ROOT / "deploy" / "agent" / "overlays" / "example",
}
RBAC_FILE = REPO_ROOT / "deploy" / "agent" / "base" / "rbac.yaml"
DEPLOY_GUIDE = REPO_ROOT / "docs" / "deploy.md"
# The Python code that runs in the agent's image: the settings it reads and its entry points.
CODE_DIRS = (REPO_ROOT / "agent_tasks", REPO_ROOT / "globalhub")

KUBERNETES_VERSION = "1.33"
NAMESPACES = {"base": "globalhub-agent", "overlay": "multicluster-global-hub-agent"}
AGENT_IMAGES = {"base": "globalhub:local", "overlay": "quay.io/example/globalhub:0.1.0"}
REDIS_IMAGE = "docker.io/library/redis:7"
AGENT_UID = 10001  # the Dockerfile's user

NAME = "globalhub-agent"
KAFKA_SECRET = "globalhub-agent-kafka"
KAFKA_SECRET_KEYS = {"ca.crt", "tls.crt", "tls.key", "sasl-password"}
COMMANDS = {
    "worker": ["celery", "-A", "agent_tasks", "worker", "-l", "info"],
    "beat": ["celery", "-A", "agent_tasks", "beat", "-l", "warning"],
    "listener": ["python", "-m", "agent_tasks.listen_spec"],
    "watcher": ["python", "-m", "agent_tasks.watch_kube"],
}
SINGLETONS = ("beat", "listener", "watcher")
KAFKA_CLIENTS = {"worker", "listener"}
WATCH_ACCESS = {
    (group, resource, verb)
    for group, resource in (
        ("cluster.open-cluster-management.io", "managedclusters"),
        ("cluster.open-cluster-management.io", "clusterclaims"),
        ("policy.open-cluster-management.io", "policies"),
    )
    for verb in ("get", "list", "watch")
}

Manifest = dict[str, Any]


# ---------------------------------------------------------------------------------------------------------------
# Rendering and reading the rendered objects
# ---------------------------------------------------------------------------------------------------------------


@functools.cache
def _render(rendering: str) -> tuple[Manifest, ...]:
    path = RENDERINGS[rendering]
    result = subprocess.run(
        [str(KUSTOMIZE), "build", str(path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=1200,  # the first call builds kustomize
        check=False,
    )
    where = path.relative_to(REPO_ROOT)
    assert result.returncode == 0, f"bin/kustomize build {where} failed:\n{result.stderr}"
    objects = tuple(item for item in yaml.safe_load_all(result.stdout) if item is not None)
    assert objects, f"bin/kustomize build {where} rendered nothing"
    return objects


@pytest.fixture(params=sorted(RENDERINGS))
def rendering(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def _one(objects: tuple[Manifest, ...], kind: str, name: str) -> Manifest:
    found = [item for item in objects if item["kind"] == kind and item["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def _deployments(objects: tuple[Manifest, ...]) -> dict[str, Manifest]:
    """The Deployments by their app.kubernetes.io/component label."""
    return {
        item["metadata"]["labels"]["app.kubernetes.io/component"]: item
        for item in objects
        if item["kind"] == "Deployment"
    }


def _pods(objects: tuple[Manifest, ...]) -> dict[str, Manifest]:
    """The pod specs by component."""
    return {component: item["spec"]["template"]["spec"] for component, item in _deployments(objects).items()}


def _containers(objects: tuple[Manifest, ...]) -> Iterator[tuple[str, Manifest, Manifest]]:
    """(component, pod spec, container) of every container, init containers included."""
    for component, pod in _pods(objects).items():
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            yield component, pod, container


def _agent_containers(objects: tuple[Manifest, ...]) -> Iterator[tuple[str, Manifest, Manifest]]:
    """The containers that run the agent's image (every one but Redis)."""
    for component, pod, container in _containers(objects):
        if component != "redis":
            yield component, pod, container


def _config_map(objects: tuple[Manifest, ...], name: str) -> dict[str, str]:
    found = [item for item in objects if item["kind"] == "ConfigMap" and item["metadata"]["name"] == name]
    assert len(found) == 1, f"a container refers to the ConfigMap {name}, which the rendering does not hold"
    data: dict[str, str] = found[0].get("data", {})
    return data


def _environment(objects: tuple[Manifest, ...], container: Manifest) -> dict[str, str]:
    """What the container's environment will hold: envFrom ConfigMaps, then env (which wins).

    A value from a key reference is resolved when the ConfigMap has the key, and is "" otherwise.
    """
    environment: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert set(source) == {"configMapRef"}, f"{container['name']}: envFrom other than a ConfigMap: {source}"
        environment.update(_config_map(objects, source["configMapRef"]["name"]))
    for variable in container.get("env", []):
        if "value" in variable:
            environment[variable["name"]] = variable["value"]
        else:
            reference = variable["valueFrom"].get("configMapKeyRef")
            assert reference is not None, f"{container['name']}: {variable['name']} is not from a ConfigMap"
            environment[variable["name"]] = _config_map(objects, reference["name"]).get(reference["key"], "")
    return environment


def _mounted_volumes(pod: Manifest, container: Manifest) -> Iterator[tuple[Manifest, Manifest]]:
    """(volumeMount, volume) of each mount of the container."""
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        yield mount, volumes[mount["name"]]


def _kafka_secret_mounts(pod: Manifest, container: Manifest) -> list[PurePosixPath]:
    return [
        PurePosixPath(mount["mountPath"])
        for mount, volume in _mounted_volumes(pod, container)
        if volume.get("secret", {}).get("secretName") == KAFKA_SECRET
    ]


def _walk(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every (path, value) of a nested object, the leaves and the inner nodes."""
    yield path, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk(item, f"{path}[{index}]")


@functools.cache
def _code() -> dict[Path, str]:
    return {path: path.read_text(encoding="utf-8") for folder in CODE_DIRS for path in sorted(folder.rglob("*.py"))}


def _code_reads(name: str) -> bool:
    """Whether the agent's code reads the environment variable ``name``.

    It does when the name appears quoted in the code; a ``<NAME>_FILE`` when ``<NAME>`` is read in a module with the
    ``name + "_FILE"`` fallback (globalhub.envconf, globalhub.protocol.kafka); a ``<PREFIX>...`` name when the code
    takes every variable that ``startswith("<PREFIX>")`` (KAFKA_CLIENT_).
    """
    for text in _code().values():
        if f'"{name}"' in text:
            return True
        if name.endswith("_FILE") and f'"{name.removesuffix("_FILE")}"' in text and '+ "_FILE"' in text:
            return True
        prefixes = re.findall(r'startswith\("([A-Z][A-Z0-9_]*_)"\)', text)
        if any(name.startswith(prefix) for prefix in prefixes):
            return True
    return False


# ---------------------------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------------------------


def test_every_rendered_object_validates_against_the_kubernetes_1_33_schemas(rendering: str) -> None:
    problems = []
    for item in _render(rendering):
        try:
            kubernetes_validate.validate(item, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            problems.append(f"{item['kind']} {item['metadata']['name']}: {error.message} at {list(error.path)}")
    assert not problems, "\n".join(problems)


def test_the_rendering_holds_the_agent_and_nothing_else(rendering: str) -> None:
    objects = _render(rendering)

    kinds_and_names = {(item["kind"], item["metadata"]["name"]) for item in objects if item["kind"] != "ConfigMap"}

    assert kinds_and_names == {
        ("Namespace", NAMESPACES[rendering]),
        ("ServiceAccount", NAME),
        ("ClusterRole", NAME),
        ("ClusterRoleBinding", NAME),
        ("Deployment", f"{NAME}-worker"),
        ("Deployment", f"{NAME}-beat"),
        ("Deployment", f"{NAME}-listener"),
        ("Deployment", f"{NAME}-watcher"),
        ("Deployment", f"{NAME}-redis"),
        ("Service", f"{NAME}-redis"),
        ("Service", f"{NAME}-metrics"),
        ("NetworkPolicy", f"{NAME}-redis"),
    }
    assert set(_deployments(objects)) == {*COMMANDS, "redis"}


def test_every_object_carries_the_common_labels(rendering: str) -> None:
    for item in _render(rendering):
        labels = item["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/name") == NAME, f"{item['kind']} {item['metadata']['name']}"
        assert labels.get("app.kubernetes.io/part-of") == "globalhub", f"{item['kind']} {item['metadata']['name']}"
    for component, deployment in _deployments(_render(rendering)).items():
        for labels in (deployment["metadata"]["labels"], deployment["spec"]["template"]["metadata"]["labels"]):
            assert labels["app.kubernetes.io/component"] == component


def test_the_rbac_file_holds_the_one_cluster_role_of_the_agent() -> None:
    documents = [item for item in yaml.safe_load_all(RBAC_FILE.read_text(encoding="utf-8")) if item is not None]

    cluster_roles = [item["metadata"]["name"] for item in documents if item["kind"] == "ClusterRole"]

    assert cluster_roles == [NAME]
    assert {item["kind"] for item in documents} <= {"ServiceAccount", "ClusterRole", "ClusterRoleBinding"}


def test_the_cluster_role_grants_only_get_list_watch_on_managed_clusters_cluster_claims_and_policies(
    rendering: str,
) -> None:
    role = _one(_render(rendering), "ClusterRole", NAME)

    for rule in role["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, f"unexpected rule fields: {rule}"
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert granted == WATCH_ACCESS
    assert "aggregationRule" not in role


def test_the_cluster_role_is_bound_to_the_watchers_service_account_in_the_agents_namespace(rendering: str) -> None:
    objects = _render(rendering)
    namespace = NAMESPACES[rendering]
    watcher = _pods(objects)["watcher"]

    binding = _one(objects, "ClusterRoleBinding", NAME)
    account = _one(objects, "ServiceAccount", watcher["serviceAccountName"])

    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME}
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": watcher["serviceAccountName"], "namespace": namespace}
    ]
    assert account["metadata"]["namespace"] == namespace
    assert not [item for item in objects if item["kind"] in {"Role", "RoleBinding"}]


def test_only_the_watchers_pod_mounts_a_service_account_token(rendering: str) -> None:
    objects = _render(rendering)
    accounts = {item["metadata"]["name"]: item for item in objects if item["kind"] == "ServiceAccount"}

    mounts = {}
    for component, pod in _pods(objects).items():
        # The pod's setting wins over the ServiceAccount's; both unset means the token is mounted.
        account = accounts.get(pod.get("serviceAccountName", "default"), {})
        automount = pod.get("automountServiceAccountToken", account.get("automountServiceAccountToken", True))
        projected_token = any(
            "serviceAccountToken" in source
            for volume in pod.get("volumes", [])
            for source in volume.get("projected", {}).get("sources", [])
        )
        mounts[component] = automount or projected_token

    assert mounts == {component: component == "watcher" for component in mounts}


def test_each_agent_process_runs_its_documented_command(rendering: str) -> None:
    commands = {component: container["command"] for component, _, container in _agent_containers(_render(rendering))}

    assert set(commands) == set(COMMANDS)
    for component, command in commands.items():
        assert command[: len(COMMANDS[component])] == COMMANDS[component], component


def test_every_agent_command_names_an_entry_point_of_this_repository(rendering: str) -> None:
    for component, _, container in _agent_containers(_render(rendering)):
        command = container["command"]
        if command[0] == "celery":
            assert command[1:3] == ["-A", "agent_tasks"], f"{component}: {command}"
            assert command[3] in {"worker", "beat"}, f"{component}: {command}"
            app = REPO_ROOT / "agent_tasks" / "celery.py"
            assert app.is_file(), f"{component}: `celery -A agent_tasks` needs {app}"
            assert re.search(r"^app = Celery\(", app.read_text(encoding="utf-8"), re.MULTILINE)
        elif command[:2] == ["python", "-m"]:
            module = REPO_ROOT.joinpath(*command[2].split(".")).with_suffix(".py")
            assert module.is_file(), f"{component}: `python -m {command[2]}` needs {module.relative_to(REPO_ROOT)}"
            assert 'if __name__ == "__main__":' in module.read_text(encoding="utf-8"), f"{module} has no main guard"
        else:
            pytest.fail(f"{component}: {command} is neither `celery -A agent_tasks` nor `python -m <module>`")


def test_every_environment_variable_of_an_agent_container_is_one_the_code_reads(rendering: str) -> None:
    objects = _render(rendering)
    names = {name for _, _, container in _agent_containers(objects) for name in _environment(objects, container)}

    assert {"HUB_NAME", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS", "GH_AGENT_METRICS_PORT"} <= names
    unread = sorted(name for name in names if not _code_reads(name))
    assert not unread, f"set in deploy/agent but read nowhere in agent_tasks/ or globalhub/: {unread}"


def test_every_agent_container_requires_the_hub_name_and_the_overlay_sets_it(rendering: str) -> None:
    objects = _render(rendering)

    for component, _, container in _agent_containers(objects):
        variables = {variable["name"]: variable for variable in container.get("env", [])}
        reference = variables["HUB_NAME"]["valueFrom"]["configMapKeyRef"]
        assert reference["key"] == "HUB_NAME", component
        assert reference.get("optional") is False, f"{component}: HUB_NAME must be required"
        if rendering == "overlay":
            assert _environment(objects, container)["HUB_NAME"] == "hub1", component


def test_the_overlay_sets_every_setting_a_container_requires() -> None:
    objects = _render("overlay")

    for component, _, container in _containers(objects):
        for variable in container.get("env", []):
            reference = variable.get("valueFrom", {}).get("configMapKeyRef")
            if reference is not None and not reference.get("optional", False):
                data = _config_map(objects, reference["name"])
                assert data.get(reference["key"]), f"{component}: {reference['name']} has no {reference['key']}"


def test_no_secret_value_is_in_the_rendered_output(rendering: str) -> None:
    objects = _render(rendering)

    assert not [item["metadata"]["name"] for item in objects if item["kind"] == "Secret"]
    for item in objects:
        for path, value in _walk(item):
            where = f"{item['kind']} {item['metadata']['name']} {path}"
            if isinstance(value, str):
                assert "-----BEGIN" not in value, f"{where} holds a PEM block"
            if isinstance(value, dict):
                for key in value:
                    if re.search(r"PASSWORD|SECRET|TOKEN|_KEY$", key) and not key.endswith(("_FILE", "_LOCATION")):
                        pytest.fail(f"{where}.{key}: a secret value in the manifests (use a file from {KAFKA_SECRET})")
                if "name" in value and re.search(r"PASSWORD|SECRET|TOKEN", str(value["name"])):
                    assert str(value["name"]).endswith("_FILE"), f"{where}: {value['name']} set as a value"


def test_kafka_credentials_come_only_from_the_kafka_secret(rendering: str) -> None:
    objects = _render(rendering)

    for component, pod in _pods(objects).items():
        for volume in pod.get("volumes", []):
            secret = volume.get("secret")
            if secret is not None:
                assert secret["secretName"] == KAFKA_SECRET, f"{component}: Secret {secret['secretName']}"
                assert "items" not in secret, f"{component}: every key of {KAFKA_SECRET} is optional; no items"
            for source in volume.get("projected", {}).get("sources", []):
                assert "secret" not in source, f"{component}: a projected Secret"
        for _, _, container in _containers(objects):
            for variable in container.get("env", []):
                assert "secretKeyRef" not in variable.get("valueFrom", {}), f"{variable['name']} from a Secret key"
            for source in container.get("envFrom", []):
                assert "secretRef" not in source, f"{container['name']}: envFrom a Secret"


def test_kafka_file_settings_point_into_the_read_only_kafka_secret_mount(rendering: str) -> None:
    objects = _render(rendering)
    checked = 0

    for component, pod, container in _agent_containers(objects):
        mounts = _kafka_secret_mounts(pod, container)
        for mount, volume in _mounted_volumes(pod, container):
            if "secret" in volume:
                assert mount.get("readOnly") is True, f"{component}: {mount['mountPath']} is writable"
        for name, value in _environment(objects, container).items():
            if name.startswith("KAFKA_") and name.endswith(("_LOCATION", "_FILE")):
                path = PurePosixPath(value)
                assert path.parent in mounts, f"{component}: {name}={value} is not in the mount of {KAFKA_SECRET}"
                assert path.name in KAFKA_SECRET_KEYS, f"{component}: {name}={value}: not a key of {KAFKA_SECRET}"
                checked += 1

    if rendering == "overlay":
        # worker and listener, each with the CA, its certificate and its key
        assert checked == 2 * 3


def test_only_the_worker_and_the_listener_get_kafka_settings_and_credentials(rendering: str) -> None:
    objects = _render(rendering)

    for component, pod, container in _containers(objects):
        kafka_settings = [name for name in _environment(objects, container) if name.startswith("KAFKA_")]
        mounts = _kafka_secret_mounts(pod, container)
        if component in KAFKA_CLIENTS:
            assert "KAFKA_BOOTSTRAP_SERVERS" in kafka_settings, component
            assert mounts == [PurePosixPath("/etc/globalhub/kafka")], component
        else:
            assert not kafka_settings, f"{component} does not talk to Kafka: {kafka_settings}"
            assert not mounts, f"{component} does not talk to Kafka but mounts {KAFKA_SECRET}"


@pytest.mark.parametrize("component", SINGLETONS)
def test_beat_listener_and_watcher_run_exactly_one_replica_with_the_recreate_strategy(
    rendering: str, component: str
) -> None:
    deployment = _deployments(_render(rendering))[component]

    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}


def test_every_container_has_cpu_and_memory_requests_and_limits(rendering: str) -> None:
    for component, _, container in _containers(_render(rendering)):
        resources = container.get("resources", {})
        for kind in ("requests", "limits"):
            assert set(resources.get(kind, {})) >= {"cpu", "memory"}, f"{component}: {kind} {resources}"


def test_every_container_runs_as_non_root_without_privilege_escalation_or_capabilities(rendering: str) -> None:
    for component, pod, container in _containers(_render(rendering)):
        effective = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
        assert effective.get("runAsNonRoot") is True, component
        assert effective.get("runAsUser", 0) != 0, component
        if component != "redis":
            assert effective["runAsUser"] == AGENT_UID, component
        assert effective.get("allowPrivilegeEscalation") is False, component
        assert effective.get("capabilities", {}).get("drop") == ["ALL"], component
        assert not effective.get("capabilities", {}).get("add"), component
        assert effective.get("readOnlyRootFilesystem") is True, component
        assert effective.get("seccompProfile") == {"type": "RuntimeDefault"}, component
        assert not effective.get("privileged", False), component


def test_every_agent_container_has_a_writable_tmp(rendering: str) -> None:
    for component, pod, container in _agent_containers(_render(rendering)):
        tmp = [volume for mount, volume in _mounted_volumes(pod, container) if mount["mountPath"] == "/tmp"]
        assert len(tmp) == 1, component
        assert "emptyDir" in tmp[0], component


def test_beat_keeps_its_schedule_file_on_an_empty_dir(rendering: str) -> None:
    pod = _pods(_render(rendering))["beat"]
    container = pod["containers"][0]

    command = container["command"]
    schedule = PurePosixPath(command[command.index("--schedule") + 1])

    mounts = {PurePosixPath(mount["mountPath"]): volume for mount, volume in _mounted_volumes(pod, container)}
    assert schedule.parent in mounts
    assert "emptyDir" in mounts[schedule.parent]


def test_the_redis_url_names_the_redis_service(rendering: str) -> None:
    objects = _render(rendering)
    service = _one(objects, "Service", f"{NAME}-redis")
    redis_labels = _deployments(objects)["redis"]["spec"]["template"]["metadata"]["labels"]

    for component, _, container in _agent_containers(objects):
        url = urlsplit(_environment(objects, container)["REDIS_URL"])
        assert (url.scheme, url.hostname, url.port) == ("redis", service["metadata"]["name"], 6379), component
    assert service["spec"]["ports"][0]["port"] == 6379
    assert service["spec"]["selector"].items() <= redis_labels.items()


def test_only_the_agents_pods_may_reach_redis(rendering: str) -> None:
    objects = _render(rendering)
    policy = _one(objects, "NetworkPolicy", f"{NAME}-redis")
    pods = {
        component: item["spec"]["template"]["metadata"]["labels"] for component, item in _deployments(objects).items()
    }

    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pods["redis"].items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    [rule] = policy["spec"]["ingress"]
    [peer] = rule["from"]
    assert set(peer) == {"podSelector"}, "only pods of this namespace"
    for component in COMMANDS:
        assert peer["podSelector"]["matchLabels"].items() <= pods[component].items(), component


def test_the_metrics_service_reaches_the_listeners_metrics_port(rendering: str) -> None:
    objects = _render(rendering)
    service = _one(objects, "Service", f"{NAME}-metrics")
    listener = _deployments(objects)["listener"]["spec"]["template"]
    container = listener["spec"]["containers"][0]

    [port] = service["spec"]["ports"]
    ports = {item["name"]: item["containerPort"] for item in container["ports"]}

    assert service["spec"]["selector"].items() <= listener["metadata"]["labels"].items()
    assert ports[port["targetPort"]] == port["port"] == 9100
    assert _environment(objects, container)["GH_AGENT_METRICS_PORT"] == "9100"


def test_the_overlay_moves_every_object_to_its_namespace() -> None:
    namespace = NAMESPACES["overlay"]

    for item in _render("overlay"):
        where = f"{item['kind']} {item['metadata']['name']}"
        if item["kind"] == "Namespace":
            assert item["metadata"]["name"] == namespace
        elif item["kind"] in {"ClusterRole", "ClusterRoleBinding"}:
            assert "namespace" not in item["metadata"], where
        else:
            assert item["metadata"]["namespace"] == namespace, where
    assert NAMESPACES["base"] != namespace


def test_the_overlay_runs_the_agent_from_its_image_and_redis_unchanged() -> None:
    for rendering in RENDERINGS:
        images = {component: container["image"] for component, _, container in _containers(_render(rendering))}
        assert images == {**dict.fromkeys(COMMANDS, AGENT_IMAGES[rendering]), "redis": REDIS_IMAGE}, rendering


def test_the_deploy_guide_uses_the_namespace_and_image_of_the_example_overlay() -> None:
    guide = DEPLOY_GUIDE.read_text(encoding="utf-8")

    assert f"-n {NAMESPACES['overlay']} " in guide
    assert AGENT_IMAGES["overlay"].partition(":")[0] in guide
    assert f"kubectl -n {NAMESPACES['overlay']} create secret generic {KAFKA_SECRET}" in guide


def test_the_kustomize_script_runs_the_cached_binary_without_go_or_network() -> None:
    _render("base")  # builds the binary if this is the first call
    script = KUSTOMIZE.read_text(encoding="utf-8")
    [version] = re.findall(r"^VERSION=(v[0-9.]+)$", script, re.MULTILINE)

    result = subprocess.run(
        [str(KUSTOMIZE), "version"],
        env={**os.environ, "PATH": "/usr/bin:/bin", "GOPROXY": "off"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == version
    assert result.stderr == ""


def test_the_kustomize_script_says_go_is_needed_when_it_must_build_without_go(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(KUSTOMIZE), "version"],
        env={**os.environ, "PATH": "/usr/bin:/bin", "GH_CACHE_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 1
    assert "needs Go" in result.stderr
    assert not list(tmp_path.rglob("kustomize")), "a failed build must leave no binary behind"
