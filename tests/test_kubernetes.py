"""The manifests of deploy/kubernetes/ fit the app: probe paths, ports, settings, store, token.

No cluster here: these tests read the YAML and check it against the app's own URL names, settings
parsers, gunicorn configuration and Prometheus jobs, so a rename on either side fails here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.urls import resolve, reverse

from metrics.conf import SETTINGS
from metrics.worker_http import PATHS as WORKER_PATHS

ROOT = Path(__file__).resolve().parent.parent
KUBERNETES = ROOT / "deploy" / "kubernetes"
Manifest = dict[str, Any]

KINDS = {
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
}


def manifests() -> list[Manifest]:
    """Return every Kubernetes object of deploy/kubernetes/*.yaml (the Kustomization aside)."""
    objects: list[Manifest] = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        objects.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None)
    return objects


def get(kind: str, name: str) -> Manifest:
    """Return the object of that kind and name."""
    (found,) = [m for m in manifests() if m["kind"] == kind and m["metadata"]["name"] == name]
    return found


def container(deployment: Manifest) -> Manifest:
    """Return the Deployment's one container."""
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only  # type: ignore[no-any-return]


def env(deployment: Manifest) -> dict[str, Manifest]:
    """Return the container's environment entries by name."""
    return {entry["name"]: entry for entry in container(deployment)["env"]}


def ports(deployment: Manifest) -> dict[str, int]:
    """Return the container's declared ports, name to number."""
    return {port["name"]: port["containerPort"] for port in container(deployment)["ports"]}


def port_number(deployment: Manifest, port: str | int) -> int:
    """Return the number of a probe's or monitor's port (a name or a number), declared by the container."""
    declared = ports(deployment)
    if isinstance(port, str):
        assert port in declared, f"port {port!r} is not declared by {deployment['metadata']['name']}"
        return declared[port]
    assert port in declared.values(), f"port {port} is not declared by {deployment['metadata']['name']}"
    return port


def selects(selector: dict[str, str], deployment: Manifest) -> bool:
    """Return whether a matchLabels selector picks the Deployment's pods."""
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    return selector.items() <= labels.items()


def environment_names_read(path: Path) -> set[str]:
    """Return the environment variables a Python file reads with os.environ.get / os.environ[...]."""
    text = path.read_text()
    return set(re.findall(r"os\.environ(?:\.get\(|\[)\"([A-Z0-9_]+)\"", text))


def test_manifests_parse_with_known_kinds_and_are_all_applied() -> None:
    """Every file is valid YAML of known kinds and API versions, and kustomization.yaml applies them all."""
    objects = manifests()
    assert {(m["apiVersion"], m["kind"]) for m in objects} == KINDS
    assert sorted((m["kind"], m["metadata"]["name"]) for m in objects) == [
        ("Deployment", "django-celery-worker"),
        ("Deployment", "django-site"),
        ("PodMonitor", "django-celery-worker"),
        ("PodMonitor", "django-site"),
        ("Service", "django-site"),
    ]
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    files = {path.name for path in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)
    for deployment in (m for m in objects if m["kind"] == "Deployment"):
        assert selects(deployment["spec"]["selector"]["matchLabels"], deployment)


def test_probes_are_the_apps_liveness_and_readiness_views_on_the_site_port() -> None:
    """The site's probes GET the URLs of metrics:liveness and metrics:readiness on the port gunicorn binds."""
    site = get("Deployment", "django-site")
    live = container(site)["livenessProbe"]["httpGet"]
    ready = container(site)["readinessProbe"]["httpGet"]
    assert live["path"] == reverse("metrics:liveness")
    assert ready["path"] == reverse("metrics:readiness")
    assert resolve(live["path"]).view_name == "metrics:liveness"
    assert resolve(ready["path"]).view_name == "metrics:readiness"
    # deploy/gunicorn.conf.py binds GUNICORN_BIND; the probes must knock on that port.
    bind = env(site)["GUNICORN_BIND"]["value"]
    assert bind.startswith("0.0.0.0:"), "the kubelet probes the pod's IP, not the loopback"
    assert port_number(site, live["port"]) == port_number(site, ready["port"]) == int(bind.rpartition(":")[2])


def test_service_exposes_the_site_port_of_the_site_pods_only() -> None:
    """The Service selects the site's pods (not the worker's) and targets the site's port, not metrics."""
    service = get("Service", "django-site")
    site = get("Deployment", "django-site")
    worker = get("Deployment", "django-celery-worker")
    assert selects(service["spec"]["selector"], site)
    assert not selects(service["spec"]["selector"], worker)
    targets = [port_number(site, port["targetPort"]) for port in service["spec"]["ports"]]
    assert targets == [ports(site)["http"]]


def test_metrics_ports_are_declared_and_set_through_the_settings() -> None:
    """METRICS_EXPORT_PORT and METRICS_CELERY_WORKER_PORT, parsed by the app, are the `metrics` ports."""
    site = get("Deployment", "django-site")
    export = SETTINGS["METRICS_EXPORT_PORT"].parse(env(site)["METRICS_EXPORT_PORT"]["value"])
    assert export == ("0.0.0.0", 9100)
    assert ports(site)["metrics"] == 9100
    worker = get("Deployment", "django-celery-worker")
    port = SETTINGS["METRICS_CELERY_WORKER_PORT"].parse(env(worker)["METRICS_CELERY_WORKER_PORT"]["value"])
    assert port == ports(worker)["metrics"] == 9808
    # Reachable from Prometheus: the worker's port listens on every interface unless told otherwise.
    assert "METRICS_CELERY_WORKER_ADDRESS" not in env(worker)
    assert SETTINGS["METRICS_CELERY_WORKER_ADDRESS"].default == "0.0.0.0"


@pytest.mark.parametrize(
    ("monitor", "deployment", "job"),
    [
        ("django-site", "django-site", "django_app"),
        ("django-celery-worker", "django-celery-worker", "celery_worker"),
    ],
)
def test_podmonitor_scrapes_the_metrics_port_with_the_pods_token(
    monitor: str, deployment: str, job: str
) -> None:
    """Each PodMonitor selects its pods only, scrapes their `metrics` port on a path they serve, as the
    job of deploy/prometheus.yml, with the Secret key the pods read as METRICS_AUTH_TOKEN."""
    podmonitor = get("PodMonitor", monitor)
    target = get("Deployment", deployment)
    deployments = [m for m in manifests() if m["kind"] == "Deployment"]
    selector = podmonitor["spec"]["selector"]["matchLabels"]
    assert [d["metadata"]["name"] for d in deployments if selects(selector, d)] == [deployment]
    (endpoint,) = podmonitor["spec"]["podMetricsEndpoints"]
    assert port_number(target, endpoint["port"]) == ports(target)["metrics"]
    if job == "django_app":
        assert resolve(endpoint["path"]).view_name == "metrics:metrics"
    else:
        assert endpoint["path"] in WORKER_PATHS
    token = env(target)["METRICS_AUTH_TOKEN"]
    assert "value" not in token, "the token must come from a Secret"
    assert endpoint["authorization"]["type"] == "Bearer"
    assert endpoint["authorization"]["credentials"] == token["valueFrom"]["secretKeyRef"]
    # The job names the shipped alerts, recording rules and dashboard select.
    assert endpoint["relabelings"] == [{"targetLabel": "job", "replacement": job}]
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    jobs = {scrape["job_name"]: scrape for scrape in config["scrape_configs"]}
    assert jobs[job]["metrics_path"] == endpoint["path"]
    assert float(endpoint["scrapeTimeout"].rstrip("s")) <= float(endpoint["interval"].rstrip("s"))


def test_environment_names_are_settings_something_reads() -> None:
    """Every env name is an app setting, or is read by deploy/gunicorn.conf.py or the site's settings."""
    known = set(SETTINGS)
    known |= environment_names_read(ROOT / "deploy" / "gunicorn.conf.py")
    for path in (ROOT / "example" / "server" / "settings" / "components").glob("*.py"):
        known |= environment_names_read(path)
    # Read by Django itself (django.conf), not by a settings file.
    known.add("DJANGO_SETTINGS_MODULE")
    assert {"GUNICORN_BIND", "DATABASE_URL", "DJANGO_ALLOWED_HOSTS", "CELERY_BROKER_URL"} <= known
    for deployment in (m for m in manifests() if m["kind"] == "Deployment"):
        unknown = set(env(deployment)) - known
        assert not unknown, f"{deployment['metadata']['name']}: nothing reads {sorted(unknown)}"


@pytest.mark.parametrize("name", ["django-site", "django-celery-worker"])
def test_store_is_an_emptydir_and_the_pod_runs_locked_down(name: str) -> None:
    """PROMETHEUS_MULTIPROC_DIR is an emptyDir mount; non-root, read-only root, only emptyDir volumes."""
    deployment = get("Deployment", name)
    pod = deployment["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["mountPath"]: mount for mount in container(deployment)["volumeMounts"]}
    store = env(deployment)["PROMETHEUS_MULTIPROC_DIR"]["value"]
    assert SETTINGS["PROMETHEUS_MULTIPROC_DIR"].parse(store) == store
    assert "emptyDir" in volumes[mounts[store]["name"]]
    assert not mounts[store].get("readOnly", False)
    assert all(set(volume) == {"name", "emptyDir"} for volume in volumes.values())
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    security = container(deployment)["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    # Both processes share the image and the Secrets: the site's and the worker's tokens are one.
    site = get("Deployment", "django-site")
    assert env(deployment)["METRICS_AUTH_TOKEN"] == env(site)["METRICS_AUTH_TOKEN"]
    assert container(deployment)["image"] == container(site)["image"]
