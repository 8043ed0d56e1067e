"""The Kubernetes manifests in deploy/kubernetes.

scripts/check-manifests (yamllint, kustomize, kubernetes-validate, the ServiceMonitor's
schema, references between objects) passes on them and fails on broken copies. The rest
reads the YAML with PyYAML and asserts what a rolling, draining, non-root deployment
needs: the probes, the user, a grace period that covers the drain, the disruption
budget, one image for the Job and the Deployment, and settings that llmux accepts.

The tools come from PyPI (kubernetes-validate, yamllint) and a Kubernetes client
(kubectl). Without them the script's cases skip, unless LLMUX_TEST_REQUIRE_K8S_TOOLS=1
(CI sets it) makes that a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmux.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
SCRIPT = ROOT / "scripts" / "check-manifests"
REQUIRE = "LLMUX_TEST_REQUIRE_K8S_TOOLS"
UNLISTED = {
    "secret.example.yaml",
    "networkpolicy.yaml",
    "ingress.example.yaml",
    "models-seed.example.yaml",
}
CUT_AND_EXIT_S = 20  # after drain_s: the cut requests end (5 s), uvicorn's shutdown, the writes


def load(folder: Path = MANIFESTS) -> dict[tuple[str, str], dict[str, Any]]:
    objects = {}
    for path in sorted(folder.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                objects[(doc["kind"], doc.get("metadata", {}).get("name", path.name))] = doc
    return objects


OBJECTS = load()
DEPLOYMENT = OBJECTS[("Deployment", "llmux")]
JOB = OBJECTS[("Job", "llmux-migrate")]
POD = DEPLOYMENT["spec"]["template"]["spec"]
SERVER = POD["containers"][0]
SECRET = OBJECTS[("Secret", "llmux-secrets")]
TOML = tomllib.loads(OBJECTS[("ConfigMap", "llmux-config")]["data"]["llmux.toml"])


def env_of(container: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the pod sees it, Secret values from the example."""
    env = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            assert ref["name"] == SECRET["metadata"]["name"]
            env[item["name"]] = SECRET["stringData"][ref["key"]]
    return env


def mounts(container: dict[str, Any], pod: dict[str, Any]) -> dict[str, tuple[dict, dict]]:
    volumes = {v["name"]: v for v in pod["volumes"]}
    return {m["mountPath"]: (m, volumes[m["name"]]) for m in container["volumeMounts"]}


# -- the script ----------------------------------------------------------------------------


def check(folder: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode == 2:
        message = f"check-manifests is missing a tool: {proc.stderr.strip()[-300:]}"
        if os.environ.get(REQUIRE) == "1":
            pytest.fail(f"{message}; {REQUIRE}=1 makes this a failure")
        pytest.skip(message)
    return proc


def test_check_manifests_passes() -> None:
    proc = check(MANIFESTS)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert "rendered with kubectl kustomize" in output or "rendered with kustomize" in output
    assert "is fine" in output


BROKEN = {
    # (file, text, replaced by, what the script must say)
    "lint: a duplicate key": (
        "service.yaml", "  type: ClusterIP\n", "  type: ClusterIP\n  type: NodePort\n",
        "duplication of key",
    ),
    "lint: trailing spaces": ("pdb.yaml", "minAvailable: 1\n", "minAvailable: 1   \n",
                              "trailing spaces"),
    "schema: a count as a string": (
        "deployment.yaml", "  replicas: 2 ", '  replicas: "two" ', "is not of type 'integer'",
    ),
    "schema: an unknown field": (
        "deployment.yaml", "          imagePullPolicy: IfNotPresent\n",
        "          imagePullPolicy: IfNotPresent\n          pullPolicy: Always\n",
        "'pullPolicy' was unexpected",
    ),
    "schema: a field of a newer Kubernetes only": (  # preStop sleep: not in 1.28
        "deployment.yaml", 'exec:\n                command: ["sleep", "10"]',
        "sleep:\n                seconds: 10", "against version 1.28",
    ),
    "reference: a Secret key nobody has": (
        "migrate-job.yaml", "key: database-url", "key: database-uri",
        "has no key 'database-uri'",
    ),
    "reference: a probe on a port the container lacks": (
        "deployment.yaml", "path: /readyz\n              port: http",
        "path: /readyz\n              port: metrics", "readinessProbe uses port 'metrics'",
    ),
    "reference: a Service that selects nothing": (
        "service.yaml", "app.kubernetes.io/component: server\n  ports:",
        "app.kubernetes.io/component: api\n  ports:", "Service llmux: its selector matches no pods",
    ),
    "reference: a PVC nobody made": (
        "deployment.yaml", "claimName: llmux-models", "claimName: models",
        "no PersistentVolumeClaim named 'models'",
    ),
    "ServiceMonitor: a misspelt field": (
        "servicemonitor.yaml", "      interval: 15s", "      intervall: 15s",
        "'intervall' was unexpected",
    ),
    "ServiceMonitor: a port the Service lacks": (
        "servicemonitor.yaml", "    - port: http", "    - port: web",
        "no selected Service has a port 'web'",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BROKEN))
def test_check_manifests_fails_on_a_broken_copy(case: str, tmp_path: Path) -> None:
    file, old, new, says = BROKEN[case]
    folder = tmp_path / "kubernetes"
    shutil.copytree(MANIFESTS, folder)
    text = (folder / file).read_text()
    assert text.count(old) == 1, f"{file} no longer has {old!r} once: update this case"
    (folder / file).write_text(text.replace(old, new))
    proc = check(folder)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output[-4000:]
    assert says in output, output[-4000:]


def test_the_built_in_renderer_agrees_with_kustomize() -> None:
    """Where no kubectl is installed the script renders by itself: the same objects."""
    if not shutil.which("kubectl"):
        pytest.skip("kubectl is not installed")

    def rendered(*flags: str) -> list[dict[str, Any]]:
        out = subprocess.run(
            [sys.executable, str(SCRIPT), "--render", *flags, str(MANIFESTS)],
            capture_output=True, text=True, timeout=120, check=True,
        ).stdout  # fmt: skip
        docs = [d for d in yaml.safe_load_all(out) if d]
        return sorted(docs, key=lambda d: (d["kind"], d["metadata"]["name"]))

    kustomized = rendered()
    assert kustomized == rendered("--no-kustomize")
    assert all(d["metadata"].get("namespace") == "llmux" for d in kustomized if d["kind"] != "Namespace")  # fmt: skip


# -- the properties, read from the YAML ----------------------------------------------------


def test_the_kustomization_lists_every_manifest_but_the_examples() -> None:
    listed = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())["resources"]
    files = {p.name for p in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(listed) == files - UNLISTED
    assert "secret.example.yaml" not in listed  # a later apply -k never overwrites the real one


def test_probes_point_at_healthz_and_readyz_on_the_served_port() -> None:
    port = {p["name"]: p["containerPort"] for p in SERVER["ports"]}
    assert SERVER["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert SERVER["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert SERVER["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    host = env_of(SERVER)["LLMUX_HOST"]
    assert host == f"0.0.0.0:{port['http']}"
    service = OBJECTS[("Service", "llmux")]["spec"]["ports"][0]
    assert service["targetPort"] == "http" and service["port"] == port["http"]
    # readiness drops quickly (a drain), liveness waits longer (a busy loop is no death)
    ready, live = SERVER["readinessProbe"], SERVER["livenessProbe"]
    assert ready["periodSeconds"] * ready["failureThreshold"] <= 15
    assert live["periodSeconds"] * live["failureThreshold"] >= 30


@pytest.mark.parametrize("workload", [DEPLOYMENT, JOB], ids=["deployment", "job"])
def test_pods_run_as_non_root_with_a_read_only_root(workload: dict[str, Any]) -> None:
    pod = workload["spec"]["template"]["spec"]
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == security["runAsGroup"] == 10001
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    for container in pod["containers"]:
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert "command" not in container  # the image's entry point (tini, _FILE secrets) runs
        # every path llmux writes is a volume: LLMUX_HOME and /tmp
        writable = {
            path for path, (mount, volume) in mounts(container, pod).items()
            if not mount.get("readOnly") and "emptyDir" in volume
        }  # fmt: skip
        assert {env_of(container)["LLMUX_HOME"], "/tmp"} <= writable


def test_the_user_and_port_are_the_images() -> None:
    dockerfile = ROOT / "Dockerfile"
    if not dockerfile.exists():
        pytest.skip("no Dockerfile yet")
    text = dockerfile.read_text()
    user = re.search(r"^USER (\d+)(?::(\d+))?", text, re.M)
    assert user, "the Dockerfile sets no numeric USER"
    assert int(user.group(1)) == POD["securityContext"]["runAsUser"]
    exposed = re.search(r"^EXPOSE (\d+)", text, re.M)
    assert exposed and int(exposed.group(1)) == SERVER["ports"][0]["containerPort"]
    assert re.search(r"^ENTRYPOINT ", text, re.M)  # why the manifests set args, not command
    # the seed pod's readiness runs the image's own health check
    seed = OBJECTS[("Pod", "llmux-models-seed")]["spec"]["containers"][0]
    script = seed["readinessProbe"]["exec"]["command"][-1]
    assert re.search(rf"^COPY \S+ {re.escape(script)}$", text, re.M), script


def test_the_grace_period_covers_the_pre_stop_sleep_and_the_drain() -> None:
    grace = POD["terminationGracePeriodSeconds"]
    sleep = SERVER["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep"
    drain_s = TOML["server"]["drain_s"]
    assert drain_s >= 120  # a reasoning model's long answer streams for minutes
    assert grace >= int(sleep[1]) + drain_s + CUT_AND_EXIT_S
    # the Job is not drained, and has a deadline of its own
    assert JOB["spec"]["activeDeadlineSeconds"] <= 900


def test_a_rollout_and_a_node_drain_keep_a_replica_serving() -> None:
    replicas = DEPLOYMENT["spec"]["replicas"]
    hpa = OBJECTS[("HorizontalPodAutoscaler", "llmux")]["spec"]
    pdb = OBJECTS[("PodDisruptionBudget", "llmux")]["spec"]
    assert replicas == 2 and hpa["minReplicas"] >= 2
    assert 1 <= pdb["minAvailable"] < min(replicas, hpa["minReplicas"])
    selector = DEPLOYMENT["spec"]["selector"]
    assert pdb["selector"] == selector
    assert DEPLOYMENT["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    anti = POD["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert anti[0]["podAffinityTerm"]["labelSelector"] == selector
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llmux"}
    # scaling down drains streams: slowly
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300
    # the migration Job's pods are not the Service's, nor the budget's
    job_labels = JOB["spec"]["template"]["metadata"]["labels"]
    assert not all(job_labels.get(k) == v for k, v in selector["matchLabels"].items())


def test_the_job_and_the_deployment_run_the_same_image_and_database() -> None:
    job = JOB["spec"]["template"]["spec"]["containers"][0]
    assert job["image"] == SERVER["image"]
    assert job["imagePullPolicy"] == SERVER["imagePullPolicy"]
    assert job["args"] == ["llmux", "db", "migrate"]
    assert SERVER["args"] == ["llmux", "serve"]
    assert JOB["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    database = next(e for e in SERVER["env"] if e["name"] == "LLMUX_STORAGE__DATABASE_URL")
    assert database in job["env"]
    # one place sets the tag of both (kustomize's images); the rendered objects agree
    images = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())["images"]
    assert [i["name"] for i in images] == [SERVER["image"].split(":")[0]]


def test_the_models_volume_is_shared_and_read_only() -> None:
    mount, volume = mounts(SERVER, POD)[env_of(SERVER)["LLMUX_STORE__PATH"]]
    assert mount["readOnly"] is True
    assert volume["persistentVolumeClaim"] == {"claimName": "llmux-models", "readOnly": True}
    pvc = OBJECTS[("PersistentVolumeClaim", "llmux-models")]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]  # replicas on several nodes
    assert TOML["store"]["bundled_model"] == ""  # nothing is written to it at start


def test_the_service_monitor_scrapes_each_pod_with_the_metrics_token() -> None:
    monitor = OBJECTS[("ServiceMonitor", "llmux")]["spec"]
    assert monitor["selector"] == DEPLOYMENT["spec"]["selector"]
    (endpoint,) = monitor["endpoints"]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
    credentials = endpoint["authorization"]["credentials"]
    token = next(e for e in SERVER["env"] if e["name"] == "LLMUX_METRICS__TOKEN")
    assert token["valueFrom"]["secretKeyRef"] == credentials


def test_secrets_come_from_the_secret_only() -> None:
    secret = ("SECRET", "PASSWORD", "TOKEN", "DATABASE_URL", "REDIS")
    for item in SERVER["env"]:
        if any(word in item["name"] for word in secret):
            assert "secretKeyRef" in item.get("valueFrom", {}), item["name"]
    assert all("CHANGE-ME" in v or "://" in v for v in SECRET["stringData"].values())
    assert "database_url" not in TOML.get("storage", {})
    assert "token" not in TOML.get("metrics", {})


def setting_exists(env_name: str) -> bool:
    name = env_name.removeprefix("LLMUX_").lower()
    section, _, key = name.partition("__")
    if not key:
        return section in Settings.model_fields
    field = Settings.model_fields.get(section)
    model = field.annotation if field else None
    return isinstance(model, type) and key in getattr(model, "model_fields", {})


@pytest.mark.parametrize("workload", [DEPLOYMENT, JOB], ids=["deployment", "job"])
def test_every_llmux_variable_is_a_setting(workload: dict[str, Any]) -> None:
    """Unknown LLMUX_* variables are ignored at start: a typo here would be silent."""
    for container in workload["spec"]["template"]["spec"]["containers"]:
        for name in env_of(container):
            assert name.startswith("LLMUX_")
            assert setting_exists(name), f"{name} is no llmux setting"


def test_llmux_accepts_the_settings_a_pod_gets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.upper().startswith("LLMUX_"):
            monkeypatch.delenv(name)
    config = tmp_path / "llmux.toml"
    config.write_text(OBJECTS[("ConfigMap", "llmux-config")]["data"]["llmux.toml"])
    for name, value in env_of(SERVER).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LLMUX_CONFIG", str(config))
    settings = load_settings()
    assert settings.config == config
    assert settings.bind == ("0.0.0.0", 11434)
    assert settings.home_dir == Path("/data") and settings.models_dir == Path("/models")
    assert settings.auth.mode == "on"
    assert settings.auth.secret == SECRET["stringData"]["auth-secret"]
    assert (settings.storage.database_url or "").startswith("postgresql://")
    assert (settings.redis.url or "").startswith("redis://")
    assert settings.metrics.enabled and settings.metrics.token
    assert settings.batch.file_store == "database"  # replicas share no disk
    assert settings.server.drain_s == TOML["server"]["drain_s"]
    assert settings.store.bundled_model == ""
