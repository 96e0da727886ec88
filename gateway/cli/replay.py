"""``gateway replay LOG --model-repository DIR [--model M] [--version V] [--tolerance X]``:
the logged inputs run again, on the version that answered them or on the one named,
and a table per (model, logged version, version run) of how the answers compare."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from gateway.errors import ConfigError, GatewayError
from gateway.payload.record import LoggedRequest
from gateway.payload.replay import Tally, Unreadable, compare, read_log
from gateway.repository.session import OnnxModel
from gateway.repository.spec import load_model_config

Group = tuple[str, int, int]  # model, logged version, version run


def replay(
    source: str,
    repository: Path,
    model: str | None = None,
    version: int | None = None,
    tolerance: float = 0.0,
) -> tuple[str, int]:
    """The report, and the exit status: 1 when some record does not reproduce on the
    version that answered it (within ``tolerance``; 0 means bit for bit), else 0."""
    sessions: dict[tuple[str, int], OnnxModel | str] = {}
    tallies: dict[Group, Tally] = {}
    problems: list[str] = []
    for item in read_log(source):
        if isinstance(item, Unreadable):
            problems.append(f"skipped {item.where}: {item.why}")
            continue
        if model is not None and item.model != model:
            continue
        run_on = item.version if version is None else version
        tally = tallies.setdefault((item.model, item.version, run_on), Tally())
        session = _session(sessions, repository, item.model, run_on)
        if isinstance(session, str):
            tally.records += 1
            tally.failed += 1
            continue
        try:
            ran = _run(session, item)
        except GatewayError as exc:
            tally.records += 1
            tally.failed += 1
            problems.append(f"request {item.request_id}: {exc.message}")
            continue
        tally.add(compare(item.outputs, ran), tolerance)
    for (name, number), session in sessions.items():
        if isinstance(session, str):
            problems.append(f"model {name} version {number}: {session}")
    lines = _table(tallies)
    if len(problems) > 20:
        problems = [*problems[:20], f"... and {len(problems) - 20} more"]
    lines += problems
    failed = any(
        logged == run_on and tally.within < tally.records
        for (_, logged, run_on), tally in tallies.items()
    )
    if not tallies:
        lines.append("no records to replay" + (f" for model {model}" if model else ""))
    return "\n".join(lines), 1 if failed else 0


def _session(
    sessions: dict[tuple[str, int], OnnxModel | str], repository: Path, model: str, version: int
) -> OnnxModel | str:
    """The version's session, loaded once (or why it cannot be)."""
    key = (model, version)
    if key not in sessions:
        onnx_file = repository / model / str(version) / "model.onnx"
        try:
            if not onnx_file.is_file():
                raise ConfigError(f"no {onnx_file}")
            config = load_model_config(repository / model / "model.toml")
            sessions[key] = OnnxModel(onnx_file, config.runtime.model_copy(update={"instances": 1}))
        except (ConfigError, OSError) as exc:
            sessions[key] = str(getattr(exc, "message", exc))
    return sessions[key]


def _run(session: OnnxModel, item: LoggedRequest) -> dict[str, np.ndarray]:
    names = list(item.outputs)
    return dict(zip(names, session.run(0, item.inputs, names), strict=True))


def _table(tallies: dict[Group, Tally]) -> list[str]:
    header = ("model", "logged", "ran", "records", "exact", "within", "argmax_diff", "max_abs_diff")
    rows = [header]
    for (name, logged, run_on), tally in sorted(tallies.items()):
        rows.append(
            (
                name,
                str(logged),
                str(run_on),
                str(tally.records),
                str(tally.exact),
                str(tally.within),
                str(tally.disagreements),
                f"{tally.max_abs_diff:.6g}" + (f" ({tally.failed} failed)" if tally.failed else ""),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def main(
    source: str, repository: Path, model: str | None, version: int | None, tolerance: float
) -> int:
    try:
        report, status = replay(source, repository, model, version, tolerance)
    except (FileNotFoundError, OSError) as exc:
        print(f"gateway replay: {exc}", file=sys.stderr)
        return 2
    print(report)
    return status
