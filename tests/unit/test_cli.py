"""The command line: flags match Settings, env variables apply, bad values are explained."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from gateway.cli import build_parser, main, settings_from_args
from gateway.config import Settings

SPEC_FLAGS = {
    "--model-repository",
    "--host",
    "--port",
    "--grpc-port",
    "--workers",
    "--redis-url",
    "--features-file",
    "--admin-token",
    "--poll-interval",
    "--max-body-bytes",
    "--shadow-log",
    "--drain-timeout",
    "--log-level",
    "--log-format",
    "--max-header-bytes",
    "--read-timeout",
    "--control-url",
    "--payload-log",
    "--payload-sample",
    "--payload-max-len",
}


def _serve_flags() -> set[str]:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    serve = commands.choices["serve"]
    return {o for a in serve._actions for o in a.option_strings if o.startswith("--")} - {"--help"}


def test_flags_match_settings_and_spec() -> None:
    fields = {"--" + name.replace("_", "-") for name in Settings.model_fields}
    assert _serve_flags() == fields == SPEC_FLAGS


def test_defaults_follow_the_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(f"GATEWAY_{name.upper()}", raising=False)
    settings = settings_from_args(build_parser().parse_args(["serve"]))
    assert settings.model_repository == Path("models")
    assert (settings.host, settings.port, settings.workers) == ("127.0.0.1", 8000, 1)
    assert settings.poll_interval == 1.0
    assert settings.max_body_bytes == 32 * 1024 * 1024
    assert settings.drain_timeout == 30.0
    assert settings.log_format == "text"
    assert settings.max_header_bytes == 64 * 1024
    assert settings.read_timeout == 30.0


def test_environment_then_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_PORT", "9100")
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", "s3cret")
    monkeypatch.setenv("GATEWAY_LOG_FORMAT", "JSON")
    settings = settings_from_args(build_parser().parse_args(["serve"]))
    assert settings.port == 9100
    assert settings.admin_token is not None and settings.admin_token.get_secret_value() == "s3cret"
    assert settings.log_format == "json"
    flagged = settings_from_args(build_parser().parse_args(["serve", "--port", "9200"]))
    assert flagged.port == 9200


def test_settings_survive_the_trip_through_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    original = Settings(
        port=1234,
        admin_token="t",
        shadow_log=tmp_path / "s.jsonl",
        workers=2,
        max_header_bytes=4096,
        read_timeout=2.5,
    )
    for key, value in original.to_environment().items():
        monkeypatch.setenv(key, value)
    assert Settings() == original


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--port", "70000"], "--port: Input should be less than or equal to 65535"),
        (["--port", "http"], "--port: Input should be a valid integer"),
        (["--workers", "0"], "--workers"),
        (["--log-format", "xml"], "--log-format"),
        (["--redis-url", "http://localhost"], "expected a URL starting with redis://"),
        (["--features-file", "/nonexistent.csv"], "no such file: /nonexistent.csv"),
        (["--poll-interval", "0"], "--poll-interval"),
        (["--max-header-bytes", "0"], "--max-header-bytes"),
        (["--read-timeout", "-1"], "--read-timeout"),
    ],
)
def test_bad_flags_exit_2_with_a_message(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", *flags]) == 2
    assert message in capsys.readouterr().err


def test_missing_repository_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--model-repository", str(tmp_path / "nope")]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_models_check_names_every_bad_model(
    test_repository: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "check", str(test_repository)]) == 1
    out = capsys.readouterr().out
    assert "PROBLEMS: badconfig, broken" in out
    assert "protobuf parsing failed" in out
    assert '[batching] max_batch_size: expected an integer, got "lots"' in out
    assert "model types" in out and "input  in_BYTES: BYTES [-1, 3]" in out
