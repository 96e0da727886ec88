"""The ``gateway`` command: ``serve`` and ``models check``.

Every ``serve`` flag is a field of ``Settings``; the parser holds no defaults of
its own, so a flag left out falls back to GATEWAY_<NAME> and then to the
field's default.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from gateway import __version__
from gateway.config import Settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="ONNX model-serving gateway")
    parser.add_argument("--version", action="version", version=f"gateway {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve a model repository over HTTP")
    for name, field in Settings.model_fields.items():
        serve.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            default=None,
            metavar=name.upper(),
            help=f"{field.description} (env GATEWAY_{name.upper()}, default: {_default(name)})",
        )

    models = commands.add_parser("models", help="inspect a model repository")
    model_commands = models.add_subparsers(dest="models_command", required=True)
    check = model_commands.add_parser(
        "check", help="load every model, print its signature and config, fail on any problem"
    )
    check.add_argument("directory", type=Path, help="the model repository")
    return parser


def _default(name: str) -> str:
    value = Settings.model_fields[name].default
    return "none" if value is None else str(value)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    return _check(args.directory)


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides = {
        name: getattr(args, name)
        for name in Settings.model_fields
        if getattr(args, name, None) is not None
    }
    return Settings(**overrides)


def _serve(args: argparse.Namespace) -> int:
    from gateway.logs import configure_logging
    from gateway.server import run

    try:
        settings = settings_from_args(args)
    except ValidationError as exc:
        return _usage_error(exc)
    if not settings.model_repository.is_dir():
        print(
            f"gateway: model repository {settings.model_repository} is not a directory",
            file=sys.stderr,
        )
        return 2
    configure_logging(settings.log_level, settings.log_format)
    run(settings)
    return 0


def _usage_error(exc: ValidationError) -> int:
    for error in exc.errors():
        flag = "--" + "-".join(str(p) for p in error["loc"]).replace("_", "-")
        message = str(error["msg"]).removeprefix("Value error, ")
        print(f"gateway serve: {flag}: {message} (got {error.get('input')!r})", file=sys.stderr)
    return 2


def _check(directory: Path) -> int:
    from gateway.logs import configure_logging
    from gateway.repository.check import check_repository

    configure_logging("error", "text")  # the report itself names every problem
    if not directory.is_dir():
        print(f"gateway models check: {directory} is not a directory", file=sys.stderr)
        return 2
    report, ok = asyncio.run(check_repository(directory))
    print(report)
    return 0 if ok else 1
