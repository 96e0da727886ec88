"""The deployment files: Kubernetes manifests valid against the Kubernetes schemas,
the compose file well formed, the Dockerfile's structure; the model configs they carry
valid for the gateway."""

from __future__ import annotations

import re
import shlex
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gateway.repository.spec import parse_model_config
from tests.dockerfile import ROOT, dockerfile

K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30.0"


def documents() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                found.append((f"{path.name}:{document['kind']}", document))
    return found


def by_kind(kind: str) -> dict[str, Any]:
    matches = [d for _, d in documents() if d["kind"] == kind]
    assert len(matches) >= 1, kind
    return matches[0]


@pytest.mark.parametrize(
    ("where", "document"), documents(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_manifests_are_valid_kubernetes(where: str, document: dict[str, Any]) -> None:
    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_every_required_kind_is_there() -> None:
    kinds = {d["kind"] for _, d in documents()}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "ConfigMap"} <= kinds
    names = {(d["kind"], d["metadata"]["name"]) for _, d in documents()}
    assert ("Deployment", "redis") in names and ("Service", "redis") in names


def test_the_deployment_probes_and_drains() -> None:
    deployment = next(
        d
        for _, d in documents()
        if d["kind"] == "Deployment" and d["metadata"]["name"] == "gateway"
    )
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    # liveness through gRPC's health service, on the gRPC port the gateway is told to use
    env = {e["name"]: e.get("value") for e in container["env"]}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["grpc"] == int(env["GATEWAY_GRPC_PORT"])
    assert container["livenessProbe"]["grpc"] == {"port": ports["grpc"], "service": "liveness"}
    service = next(
        d for _, d in documents() if d["kind"] == "Service" and d["metadata"]["name"] == "gateway"
    )
    assert {"name": "grpc", "port": 8001, "targetPort": "grpc"}.items() <= next(
        p for p in service["spec"]["ports"] if p["name"] == "grpc"
    ).items()
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    env = {e["name"]: e.get("value") for e in container["env"]}
    drain = float(env["GATEWAY_DRAIN_TIMEOUT"])
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    sleep = re.search(r"sleep\((\d+(?:\.\d+)?)\)", " ".join(pre_stop))
    assert sleep is not None, pre_stop
    pause = float(sleep.group(1))
    assert pod["terminationGracePeriodSeconds"] >= drain + pause
    assert pod["securityContext"]["runAsNonRoot"] is True
    # every ConfigMap key mounted is one the ConfigMap has
    keys = set(by_kind("ConfigMap")["data"])
    mounted = {m["subPath"] for m in container["volumeMounts"] if "subPath" in m}
    assert mounted <= keys and mounted


def test_the_configmap_holds_valid_model_configs() -> None:
    for key, text in by_kind("ConfigMap")["data"].items():
        assert key.endswith(".model.toml")
        import tomllib

        parse_model_config(tomllib.loads(text), source=key)  # raises on any problem
        assert (ROOT / "models" / key.removesuffix(".model.toml")).is_dir()


def test_the_compose_file() -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"gateway", "redis", "features-loader"} <= set(services)
    gateway = services["gateway"]
    assert gateway["environment"]["GATEWAY_REDIS_URL"].startswith("redis://redis:")
    assert gateway["depends_on"]["features-loader"]["condition"] == (
        "service_completed_successfully"
    )
    assert "8000:8000" in gateway["ports"]
    loader = services["features-loader"]
    assert loader["build"]["dockerfile"] == "Dockerfile"
    assert (ROOT / "deploy" / loader["build"]["context"] / "Dockerfile").is_file()


def test_the_dockerfile_structure() -> None:
    instructions = dockerfile()
    stages = [args for name, args in instructions if name == "FROM"]
    assert len(stages) >= 2, "multi-stage"
    assert all(re.match(r"python:3\.\d+-slim", s) for s in stages)
    final = instructions[max(i for i, (n, _) in enumerate(instructions) if n == "FROM") :]
    users = [args for name, args in final if name == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert ("EXPOSE", "8000 8001") in final
    healthcheck = " ".join(args for name, args in final if name == "HEALTHCHECK")
    assert "/v2/health/ready" in healthcheck
    env = " ".join(args for name, args in final if name == "ENV")
    assert "GATEWAY_MODEL_REPOSITORY=/models" in env and "GATEWAY_HOST=0.0.0.0" in env
    for name, args in instructions:  # every COPY from the build context exists
        if name == "COPY" and "--from=" not in args:
            *sources, _ = shlex.split(args)
            for source in sources:
                if not source.startswith("--"):
                    assert (ROOT / source).exists(), source
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored
