"""The ``gateway`` command: ``serve``, ``models check`` and ``features load``.

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
from gateway.validation import Problem, describe


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

    profile = commands.add_parser("profile", help="reference profiles for drift monitoring")
    profile_commands = profile.add_subparsers(dest="profile_command", required=True)
    build = profile_commands.add_parser(
        "build", help="write a version's profile.json from a sample of its inputs"
    )
    build.add_argument(
        "data", type=Path, nargs="?", default=None, help="the sample: CSV, JSONL or .npy"
    )
    build.add_argument(
        "--from-payload-log",
        default=None,
        metavar="LOG",
        help="the sample: the model's inputs in a payload log (a file, a directory or a stream)",
    )
    build.add_argument("--model-repository", type=Path, default=Path("models"))
    build.add_argument("--model", required=True)
    build.add_argument("--version", type=int, required=True, dest="model_version")
    build.add_argument("--bins", type=int, default=10, help="quantile bins per column")
    build.add_argument(
        "--edges-from",
        type=int,
        default=None,
        metavar="VERSION",
        help="reuse that version's bin edges, so the two versions' outputs can be compared",
    )

    rollout = commands.add_parser("rollout", help="start, watch and abort rollouts")
    rollout_commands = rollout.add_subparsers(dest="rollout_command", required=True)
    for name, text in (
        ("start", "roll a version out: shadow, then steps of live traffic, gated"),
        ("status", "the rollout's state and every evaluation, as a table"),
        ("abort", "stop the rollout and return all traffic to the stable version"),
    ):
        command = rollout_commands.add_parser(name, help=text)
        command.add_argument("model")
        command.add_argument("--url", default="http://127.0.0.1:8000", help="the gateway")
        command.add_argument("--token", required=True, help="its --admin-token")
        if name == "start":
            command.add_argument("--version", type=int, required=True, dest="model_version")
            command.add_argument("--shadow-s", type=float, default=None)
            command.add_argument("--steps", type=float, nargs="+", default=None)
            command.add_argument("--interval-s", type=float, default=None)
            command.add_argument(
                "--gate", action="append", default=[], help="NAME=VALUE, e.g. max_psi=0.2"
            )
        if name == "status":
            command.add_argument(
                "--wait",
                type=float,
                default=None,
                metavar="SECONDS",
                help="wait up to SECONDS for the rollout to finish; exit 0 only if promoted",
            )

    replay = commands.add_parser(
        "replay", help="run a payload log's inputs again and compare with what was answered"
    )
    replay.add_argument(
        "log", help="a payload .jsonl file, a directory of them, or redis://.../STREAM"
    )
    replay.add_argument("--model-repository", type=Path, required=True)
    replay.add_argument("--model", default=None, help="only this model's records")
    replay.add_argument(
        "--version",
        type=int,
        default=None,
        dest="model_version",
        help="run every record on this version (what would it have answered?)",
    )
    replay.add_argument(
        "--tolerance",
        type=float,
        default=0.0,
        help="largest absolute difference that still reproduces (default 0: bit for bit)",
    )

    features = commands.add_parser("features", help="manage model features in Redis")
    feature_commands = features.add_subparsers(dest="features_command", required=True)
    load = feature_commands.add_parser(
        "load", help="write a CSV or JSONL file of entities into Redis HASHes (pipelined)"
    )
    load.add_argument("file", type=Path, help="CSV with a header line, or JSONL (.jsonl)")
    load.add_argument("--redis-url", required=True, help="redis://, rediss://, unix://, ...")
    load.add_argument(
        "--key", required=True, help="key template; its placeholder names the id column"
    )
    load.add_argument("--ttl", type=int, default=None, help="expire each key after SECONDS")
    load.add_argument(
        "--strict", action="store_true", help="write nothing if any row is bad (default: skip)"
    )
    load.add_argument("--chunk-size", type=int, default=1000, help="rows per pipeline")
    return parser


def _default(name: str) -> str:
    value = Settings.model_fields[name].default
    return "none" if value is None else str(value)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "features":
        return _load_features(args)
    if args.command == "profile":
        return _build_profile(args)
    if args.command == "rollout":
        return _rollout(args)
    if args.command == "replay":
        from gateway.cli.replay import main as replay_main

        return replay_main(
            args.log, args.model_repository, args.model, args.model_version, args.tolerance
        )
    return _check(args.directory)


def _rollout(args: argparse.Namespace) -> int:
    from gateway.cli.rollout import ApiError, call, describe, plan, wait

    url = f"{args.url.rstrip('/')}/admin/models/{args.model}/rollout"
    try:
        if args.rollout_command == "start":
            body = plan(args.model_version, args.shadow_s, args.steps, args.interval_s, args.gate)
            state = call("POST", url, args.token, body)
        elif args.rollout_command == "abort":
            state = call("DELETE", url, args.token)
        elif args.wait is not None:
            state = wait(url, args.token, args.wait)
        else:
            state = call("GET", url, args.token)
    except ApiError as exc:
        print(f"gateway rollout {args.rollout_command}: {exc}", file=sys.stderr)
        return 1
    print(describe(state))
    if args.rollout_command == "status" and args.wait is not None:
        # for a deploy script: go on only with the new version serving
        return 0 if state["state"] == "promoted" else 1
    return 0


def _build_profile(args: argparse.Namespace) -> int:
    from gateway.cli.profile import build_version_profile
    from gateway.errors import ConfigError
    from gateway.logs import configure_logging

    configure_logging("error", "text")
    if not 2 <= args.bins <= 100:
        print(f"gateway profile build: --bins must be 2 to 100, got {args.bins}", file=sys.stderr)
        return 2
    if (args.data is None) == (args.from_payload_log is None):
        print(
            "gateway profile build: give the sample as DATA or --from-payload-log LOG (one)",
            file=sys.stderr,
        )
        return 2
    try:
        _, summary = build_version_profile(
            args.data if args.data is not None else args.from_payload_log,
            args.model_repository,
            args.model,
            args.model_version,
            args.bins,
            args.edges_from,
        )
    except ConfigError as exc:
        print(f"gateway profile build: {exc}", file=sys.stderr)
        return 1
    print(summary)
    return 0


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides = {
        name: getattr(args, name)
        for name in Settings.model_fields
        if getattr(args, name, None) is not None
    }
    return Settings(**overrides)


def _serve(args: argparse.Namespace) -> int:
    from gateway.logs import configure_logging
    from gateway.packages import warn_about_runtime_clash
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
    warn_about_runtime_clash()
    run(settings)
    return 0


def _usage_error(exc: ValidationError) -> int:
    print(describe(exc, _flag_problem, separator="\n"), file=sys.stderr)
    return 2


def _flag_problem(problem: Problem) -> str:
    flag = "--" + problem.path("-").replace("_", "-")
    return f"gateway serve: {flag}: {problem.message} (got {problem.given!r})"


def _check(directory: Path) -> int:
    from gateway.cli.check import check_repository
    from gateway.logs import configure_logging

    configure_logging("error", "text")  # the report itself names every problem
    if not directory.is_dir():
        print(f"gateway models check: {directory} is not a directory", file=sys.stderr)
        return 2
    report, ok = asyncio.run(check_repository(directory))
    print(report)
    return 0 if ok else 1


def _load_features(args: argparse.Namespace) -> int:
    from gateway.config import REDIS_URL_STARTS, is_redis_url
    from gateway.features.bulk import LoadError, default_progress, id_column, load_file

    def usage(message: str) -> int:
        print(f"gateway features load: {message}", file=sys.stderr)
        return 2

    if not args.file.is_file():
        return usage(f"no such file: {args.file}")
    if not is_redis_url(args.redis_url):
        return usage(f"--redis-url must start with {REDIS_URL_STARTS}; got {args.redis_url!r}")
    if args.ttl is not None and args.ttl <= 0:
        return usage(f"--ttl must be a positive number of seconds, got {args.ttl}")
    if args.chunk_size <= 0:
        return usage(f"--chunk-size must be positive, got {args.chunk_size}")
    try:
        id_column(args.key)
    except LoadError as exc:
        return usage(str(exc))
    try:
        report = asyncio.run(
            load_file(
                args.file,
                args.redis_url,
                args.key,
                args.ttl,
                args.strict,
                args.chunk_size,
                default_progress,
            )
        )
    except LoadError as exc:
        print(f"gateway features load: {exc}", file=sys.stderr)
        return 1
    print(report.summary(args.file, args.redis_url, args.key, args.ttl))
    return 0 if report.written else 1
