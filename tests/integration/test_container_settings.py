"""The container's settings, run without docker: the image's ENV, ENTRYPOINT, CMD and
HEALTHCHECK, and compose's gateway and features-loader services, as real processes (a
`gateway serve`, a redis-server, the loader)."""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests import onnx_models
from tests.dockerfile import ROOT, dockerfile
from tests.gateway_process import serving
from tests.redis_servers import RedisServer

pytestmark = pytest.mark.integration

# The image's ENV, ENTRYPOINT and CMD (and compose's settings for the gateway service) are
# run here as a process, with these differences only: GATEWAY_HOST is 127.0.0.1 (tests
# listen nowhere else), GATEWAY_PORT a free port, /models a directory of the test's, the
# image's `gateway` and `python` this environment's, and compose's redis://redis:6379 a
# redis-server of the test's.


def image_settings() -> tuple[dict[str, str], list[str], list[str]]:
    """The final stage's environment, its command (ENTRYPOINT + CMD) and its HEALTHCHECK
    command."""
    instructions = dockerfile()
    final = instructions[max(i for i, (n, _) in enumerate(instructions) if n == "FROM") :]
    env: dict[str, str] = {}
    for name, args in final:
        if name == "ENV":
            for word in shlex.split(args):
                key, _, value = word.partition("=")
                env[key] = value
    entrypoint = [json.loads(args) for name, args in final if name == "ENTRYPOINT"][-1]
    cmd = [json.loads(args) for name, args in final if name == "CMD"][-1]
    healthcheck = [args for name, args in final if name == "HEALTHCHECK"][-1]
    probe = json.loads(healthcheck.split(" CMD ", 1)[1])
    return env, [*entrypoint, *cmd], probe


def local(argv: list[str]) -> list[str]:
    """The image's programs as this environment has them."""
    programs = {"python": sys.executable, "gateway": str(Path(sys.executable).parent / "gateway")}
    assert Path(programs["gateway"]).is_file(), "the gateway console script (pip install -e .)"
    return [programs.get(argv[0], argv[0]), *argv[1:]]


def in_image(env: dict[str, str], models: Path) -> dict[str, str]:
    assert env["GATEWAY_MODEL_REPOSITORY"] == "/models"
    return {**env, "GATEWAY_HOST": "127.0.0.1", "GATEWAY_MODEL_REPOSITORY": str(models)}


def bundled_models(root: Path) -> Path:
    """/models as the image has it: what its COPY instructions put there."""
    for name, args in dockerfile():
        if name == "COPY" and "--from=" not in args:
            *sources, target = shlex.split(args)
            if target.startswith("/models/"):
                (source,) = sources
                shutil.copytree(ROOT / source, root / target.removeprefix("/models/"))
    assert (root / "fraud" / "entities.csv").is_file() and (root / "digits").is_dir()
    return root


def own_models(root: Path) -> Path:
    """A repository of someone else's: one model, no [features], no entities file."""
    onnx_models.write_model(root, "pair", 1, onnx_models.scaled_sum(2.0))
    return root


def infer(url: str, model: str, inputs: list[dict[str, Any]]) -> dict[str, Any]:
    response = httpx.post(f"{url}/v2/models/{model}/infer", json={"inputs": inputs}, timeout=30)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def assert_pair_serves(url: str) -> None:
    a = {"name": "a", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}
    b = {"name": "b", "datatype": "INT64", "shape": [1, 4], "data": [1, 1, 1, 1]}
    outputs = {o["name"]: o["data"] for o in infer(url, "pair", [a, b])["outputs"]}
    assert outputs["sum"] == [4.0, 6.0, 8.0, 10.0]


def fraud_by_id_and_by_row(url: str, user: str) -> tuple[list[float], list[float]]:
    """The fraud model's probabilities for ``user`` looked up by id, and for the user's
    row of the bundled entities.csv sent as features."""
    with (ROOT / "models" / "fraud" / "entities.csv").open() as handle:
        row = next(r for r in csv.DictReader(handle) if r["user_id"] == user)
    features = [float(v) for k, v in row.items() if k != "user_id"]
    by_id = infer(
        url, "fraud", [{"name": "user_id", "datatype": "BYTES", "shape": [1], "data": [user]}]
    )
    by_row = infer(
        url, "fraud", [{"name": "features", "datatype": "FP32", "shape": [1, 6], "data": features}]
    )
    probabilities = {o["name"]: o["data"] for o in by_id["outputs"]}["probabilities"]
    expected = {o["name"]: o["data"] for o in by_row["outputs"]}["probabilities"]
    return probabilities, expected


def assert_healthy(probe: list[str], env: dict[str, str], port: str) -> None:
    done = subprocess.run(
        local(probe), env={**os.environ, **env, "GATEWAY_PORT": port}, timeout=30, check=False
    )
    assert done.returncode == 0, "the image's HEALTHCHECK command fails"


def test_the_image_serves_its_bundled_models(tmp_path: Path) -> None:
    """`docker run onnx-gateway`: both examples ready, the fraud model's features from
    its own entities.csv, JSON log lines, and the HEALTHCHECK passes."""
    env, command, probe = image_settings()
    assert "GATEWAY_FEATURES_FILE" not in env  # a mounted repository must not need one
    assert env["GATEWAY_LOG_FORMAT"] == "json"
    models = bundled_models(tmp_path / "models")
    log = tmp_path / "gateway.log"
    with serving([], log, env=in_image(env, models), command=local(command), cwd=tmp_path) as gw:
        probabilities, expected = fraud_by_id_and_by_row(gw.url, "u0001")
        assert probabilities == pytest.approx(expected)
        assert_healthy(probe, env, gw.url.rsplit(":", 1)[1])
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    assert lines and all(json.loads(line) for line in lines), lines[:3]


def test_the_image_serves_a_mounted_repository(tmp_path: Path) -> None:
    """`docker run -v "$PWD/models:/models:ro" onnx-gateway` with a repository that has no
    fraud model and no entities file: ready, and it serves."""
    env, command, probe = image_settings()
    models = own_models(tmp_path / "models")
    with serving(
        [],
        tmp_path / "gateway.log",
        env=in_image(env, models),
        command=local(command),
        cwd=tmp_path,
    ) as gw:
        assert_pair_serves(gw.url)
        assert_healthy(probe, env, gw.url.rsplit(":", 1)[1])


def compose_settings(redis_url: str, models: Path) -> tuple[dict[str, str], list[str], list[str]]:
    """The gateway service's environment (the image's, then compose's) and command, and the
    features-loader's command, with Redis and /models where this test has them."""
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    services = compose["services"]
    image_env, image_command, _ = image_settings()
    entrypoint = image_command[:1]

    def here(value: str) -> str:
        value = value.replace("redis://redis:6379/0", redis_url)
        # the control state's database: the same server, database 1
        value = value.replace("redis://redis:6379/1", redis_url.rsplit("/", 1)[0] + "/1")
        return (
            str(models) + value.removeprefix("/models") if value.startswith("/models/") else value
        )

    gateway = services["gateway"]
    env = {
        **in_image(image_env, models),
        **{k: here(str(v)) for k, v in gateway["environment"].items()},
    }
    env["GATEWAY_HOST"] = "127.0.0.1"
    return (
        env,
        local([*entrypoint, *gateway["command"]]),
        local([*entrypoint, *(here(str(a)) for a in services["features-loader"]["command"])]),
    )


def test_compose_serves_the_bundled_models_from_redis(tmp_path: Path) -> None:
    """compose up: the features-loader writes the example users into Redis, and the gateway
    serves the fraud model's features from there."""
    redis_server = RedisServer(tmp_path / "redis").start()
    try:
        models = bundled_models(tmp_path / "models")
        env, command, loader = compose_settings(redis_server.url, models)
        assert "GATEWAY_FEATURES_FILE" not in env
        done = subprocess.run(loader, env={**os.environ, **env}, capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr.decode()
        assert redis_server.client().hget("user:u0002", "age") == "34"
        with serving([], tmp_path / "gateway.log", env=env, command=command, cwd=tmp_path) as gw:
            probabilities, expected = fraud_by_id_and_by_row(gw.url, "u0002")
            assert probabilities == pytest.approx(expected)
    finally:
        redis_server.kill()


def test_compose_serves_your_own_models(tmp_path: Path) -> None:
    """compose's "your own models" example: its volume on /models, the gateway service's
    settings (Redis among them), a repository without the fraud model."""
    text = (ROOT / "deploy" / "docker-compose.yml").read_text()
    assert re.search(r"#\s+- \.\./models:/models:ro", text), "the example volume is on /models"
    redis_server = RedisServer(tmp_path / "redis").start()
    try:
        models = own_models(tmp_path / "models")
        env, command, _ = compose_settings(redis_server.url, models)
        with serving([], tmp_path / "gateway.log", env=env, command=command, cwd=tmp_path) as gw:
            assert_pair_serves(gw.url)
    finally:
        redis_server.kill()
