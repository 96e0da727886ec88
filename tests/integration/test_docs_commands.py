"""Every command of the README and docs/ runs, in the order written, and answers as shown.

The documents are a walkthrough: each step runs against the gateway the step before it
left running. This test replays them against a real gateway, so that a changed flag,
path, message or Makefile target breaks a test instead of a reader's first hour.

How a document is replayed (README.md first, then every docs/*.md, each page in order):

- Every ```sh block is cut into commands: a command ends at a line end outside quotes
  and not after a backslash. Comment lines directly below a command, and a comment at
  the end of its last line, are its *expected output*.
- Commands that start or stop servers are the harness's job, and never touch port 8000
  or 6379/6390 of the machine:
    ``make serve [PORT=..] [ARGS="..."]`` (with ``VAR=value`` in front, for GATEWAY_*):
        the running gateway is stopped, and the command ``make -n serve`` prints (so the
        Makefile's own recipe) is started on a free port, in a scratch directory holding
        a copy of models/ and a link to .venv (hot swap edits models/ there, not here);
    ``gateway serve ...`` (any of its spellings): likewise, on a free port;
    ``redis-server ...``: a redis-server of tests/redis_servers.py on a free port;
    ``redis-cli ... shutdown``: that server is stopped.
- Commands that are long or need what a test machine lacks are skipped: other ``make``
  targets (test, bench, lint, ...), docker, kubectl, locust, pip, python scripts.
- Everything else (curl, mkdir, cp, mv, rm, sleep, redis-cli, ``gateway features
  load``, ``VAR=value`` assignments) runs in bash, in the scratch directory, with
  ``localhost:8000``/``127.0.0.1:8000`` and port 6390 rewritten to the harness's
  ports. Assignments are replayed before every later command of the same document, so
  ``$ZERO`` and ``$T`` work as they do in a terminal.
- ``curl`` is a shell function adding ``-sS --max-time 20 --fail-with-body``: a
  documented request that answers 4xx/5xx fails the test, unless its expected output
  shows ``{"error": ...}``. A pipeline fails if any part fails (``pipefail``), so a
  ``| grep`` that finds nothing fails too.
- Expected outputs are checked loosely: in a JSON-looking comment every ``"key"`` must
  appear in the output, and every ``"key":value`` pair whose value is complete (no
  ``...``) must appear verbatim; ``x-header: value`` lines, ``metric{labels}`` lines
  and a bare status (``# 404``, for ``-w '%{http_code}'``) must appear. Other
  comments are prose.
- A ```console block's ``$ command`` runs too, and each line shown below it (other
  than ``...``) must be printed, in that order; a line ending in ``...`` stands for
  any line that starts with what comes before the dots.

Each docs/ page starts with a fresh gateway (``make serve ARGS="--admin-token s3cret"``,
the one the README's "Running with options" leaves running) and fresh shell variables.
Every command has a 60 s bound and the whole replay a few minutes; the last 40 lines of
the gateway's log come with any failure.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.gateway_process import free_port, wait_ready
from tests.redis_servers import RedisServer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMAND_TIMEOUT_S = 60
DOCS_GATEWAY = 'make serve ARGS="--admin-token s3cret"'
SKIPPED_PROGRAMS = {"docker", "kubectl", "locust", "pip", "pip3", "python", "python3"}
CURL = 'curl() { command curl -sS --max-time 20 $DOCS_CURL_FAIL "$@"; }\n'


@dataclass
class Command:
    document: str
    line: int
    text: str  # as written, comments removed
    expected: list[str] = field(default_factory=list)
    console_output: list[str] | None = None  # the lines a ```console block shows

    def where(self) -> str:
        return f"{self.document}:{self.line}: {self.text.strip()}"


def scan(text: str) -> tuple[str, list[str], str | None]:
    """Split shell text into code and comments; the third value is the quote still open
    at the end (None when the text is a complete command, as far as quotes go)."""
    code: list[str] = []
    comments: list[str] = []
    quote: str | None = None
    i = 0
    while i < len(text):
        char = text[i]
        if quote is None and char == "#" and (i == 0 or text[i - 1].isspace()):
            end = text.find("\n", i)
            end = len(text) if end < 0 else end
            comments.append(text[i + 1 : end].strip())
            i = end
            continue
        code.append(char)
        if char == "\\" and quote != "'" and i + 1 < len(text):
            code.append(text[i + 1])
            i += 2
            continue
        if quote is None and char in "'\"":
            quote = char
        elif char == quote:
            quote = None
        i += 1
    return "".join(code), comments, quote


def blocks(text: str) -> Iterator[tuple[str, int, list[str]]]:
    """(language, line number of the first line, lines) of every fenced block."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = re.match(r"^```(\w*)\s*$", lines[i])
        if match is None:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        yield match.group(1), i + 2, lines[i + 1 : end]
        i = end + 1


def commands(name: str, markdown: str) -> list[Command]:
    found: list[Command] = []
    for language, first, lines in blocks(markdown):
        if language == "console":
            for k, line in enumerate(lines):
                if line.startswith("$ "):
                    shown = [s for s in lines[k + 1 :] if not s.startswith("$ ")]
                    found.append(Command(name, first + k, line[2:], [], shown))
            continue
        if language != "sh":
            continue
        pending: list[str] = []
        start = 0
        last: Command | None = None
        for k, line in enumerate(lines):
            if not pending:
                if not line.strip():
                    last = None
                    continue
                if line.lstrip().startswith("#"):
                    if last is not None:
                        last.expected.append(line.lstrip()[1:].strip())
                    continue
                start = first + k
            pending.append(line)
            text = "\n".join(pending)
            code, comments, quote = scan(text)
            if quote is not None or code.rstrip().endswith("\\"):
                continue
            last = Command(name, start, code, comments[-1:] if comments else [])
            found.append(last)
            pending = []
        assert not pending, f"{name}:{start}: unfinished command in a sh block"
    return found


# -- expected output ------------------------------------------------------------------

PAIR = re.compile(
    r'("[^"\\]*"\s*:\s*(?:"(?:[^"\\]|\\.)*"|true|false|null|-?[0-9][0-9.e+-]*))(?=\s*[,}\]])'
)


def expects_error(command: Command) -> bool:
    return any(
        (text.startswith(("{", "[")) and '"error"' in text) or re.fullmatch(r"[45][0-9][0-9]", text)
        for text in command.expected
    )


def check_output(command: Command, output: str) -> list[str]:
    """What the output lacks of the expected output written under the command."""
    problems = []
    for text in command.expected:
        if text.startswith(("{", "[")):
            for key in re.findall(r'"([^"\\]*)"\s*:', text):
                if f'"{key}"' not in output:
                    problems.append(f'key "{key}" missing')
            for match in PAIR.finditer(text):
                pair = re.sub(r'"\s*:\s*', '":', match.group(1))
                if "..." not in pair and pair not in output:
                    problems.append(f"{pair} missing")
        elif header := re.match(r"^(x-[\w-]+): (\S+)$", text, re.IGNORECASE):
            if f"{header[1]}: {header[2]}".lower() not in output.lower():
                problems.append(f"header {text!r} missing")
        elif re.fullmatch(r"[1-5][0-9][0-9]", text):  # a status printed by -w '%{http_code}'
            if text not in output.split():
                problems.append(f"status {text} not printed")
        elif metric := re.match(r"^(gateway_\w+\{[^}]*\})", text):
            if metric[1] not in output:
                problems.append(f"metric {metric[1]} missing")
    if command.console_output is not None:
        printed = [line.rstrip() for line in output.splitlines()]
        position = 0
        for shown in command.console_output:
            if shown.strip() in ("", "..."):
                continue
            shown = shown.rstrip()
            prefix = shown.removesuffix("...")
            matches = [
                k
                for k in range(position, len(printed))
                if printed[k] == shown or (prefix != shown and printed[k].startswith(prefix))
            ]
            if not matches:
                problems.append(f"line {shown!r} not printed (in this order)")
            else:
                position = matches[0] + 1
    return problems


# -- the harness's servers ------------------------------------------------------------


class Harness:
    def __init__(self, scratch: Path):
        self.work = scratch / "work"
        self.work.mkdir()
        shutil.copytree(ROOT / "models", self.work / "models")
        (self.work / ".venv").symlink_to(ROOT / ".venv")
        self.logs = scratch / "logs"
        self.logs.mkdir()
        self.port = free_port()
        self.redis = RedisServer(scratch / "redis")
        self.gateway: subprocess.Popen[bytes] | None = None
        self.log: Path | None = None
        self.started = 0
        self.environment = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}

    def rewrite(self, text: str) -> str:
        text = re.sub(r"\b(localhost|127\.0\.0\.1):8000\b", f"127.0.0.1:{self.port}", text)
        text = re.sub(r"127\.0\.0\.1:6390\b", f"127.0.0.1:{self.redis.port}", text)
        return re.sub(r"(-p|--port) 6390\b", rf"\g<1> {self.redis.port}", text)

    def start_gateway(self, shell_command: str, environment: dict[str, str]) -> None:
        self.stop_gateway()
        self.started += 1
        self.log = self.logs / f"gateway-{self.started}.log"
        with self.log.open("wb") as log:
            self.gateway = subprocess.Popen(
                ["bash", "-c", f"exec {shell_command}"],
                cwd=self.work,
                env={**self.environment, **environment},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_ready(f"http://127.0.0.1:{self.port}", self.gateway)

    def make_serve(self, variables: dict[str, str], environment: dict[str, str]) -> None:
        """What `make serve` runs, as the Makefile says, on the harness's port."""
        overrides = [f"{k}={v}" for k, v in variables.items() if k != "PORT"]
        recipe = subprocess.run(
            ["make", "-s", "-n", "-C", str(ROOT), "-o", ".venv/.installed", "serve"]
            + [*overrides, f"PORT={self.port}"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
        assert recipe.startswith(".venv/bin/gateway serve"), recipe
        self.start_gateway(recipe, environment)

    def stop_gateway(self) -> None:
        if self.gateway is not None and self.gateway.poll() is None:
            self.gateway.terminate()
            try:
                self.gateway.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.gateway.kill()
                self.gateway.wait()
        self.gateway = None

    def log_tail(self) -> str:
        if self.log is None or not self.log.exists():
            return "(no gateway started)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-40:])

    def close(self) -> None:
        self.stop_gateway()
        self.redis.kill()


def split_assignments(words: list[str]) -> tuple[dict[str, str], list[str]]:
    assignments: dict[str, str] = {}
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        name, value = words.pop(0).split("=", 1)
        assignments[name] = value
    return assignments, words


def replay(harness: Harness, document: list[Command], report: dict[str, list[str]]) -> None:
    prelude: list[str] = []
    for command in document:
        code = command.text.strip().removesuffix("&").strip()
        words = shlex.split(code, posix=True)
        environment, rest = split_assignments(list(words))
        program = Path(rest[0]).name if rest else ""
        if not rest:
            prelude.append(code)
            continue
        if rest[:2] == ["make", "serve"]:
            variables, _ = split_assignments(rest[2:])
            harness.make_serve(variables, environment)
            report["servers"].append(command.where())
            continue
        if "serve" in rest[:4] and (program == "gateway" or rest[1:3] == ["-m", "gateway"]):
            environment["GATEWAY_PORT"] = str(harness.port)
            harness.start_gateway(harness.rewrite(code), environment)
            report["servers"].append(command.where())
            continue
        if program == "redis-server":
            harness.redis.ensure_running()
            report["servers"].append(command.where())
            continue
        if program == "redis-cli" and "shutdown" in rest:
            harness.redis.kill()
            report["servers"].append(command.where())
            continue
        if program == "make" or program in SKIPPED_PROGRAMS:
            report["skipped"].append(command.where())
            continue
        run(harness, command, prelude)
        report["ran"].append(command.where())


def run(harness: Harness, command: Command, prelude: list[str]) -> None:
    script = "set -o pipefail\n" + CURL + "\n".join(prelude) + "\n" + command.text
    started = time.monotonic()
    try:
        result = subprocess.run(
            ["bash", "-c", harness.rewrite(script)],
            cwd=harness.work,
            env={
                **harness.environment,
                "DOCS_CURL_FAIL": "" if expects_error(command) else "--fail-with-body",
            },
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{command.where()}\ndid not finish within {COMMAND_TIMEOUT_S} s")
    problems = [] if result.returncode == 0 else [f"exit status {result.returncode}"]
    problems += check_output(command, result.stdout)
    if problems:
        pytest.fail(
            f"{command.where()}\n"
            f"(after {time.monotonic() - started:.1f} s) {'; '.join(problems)}\n"
            f"stdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-2000:]}\n"
            f"expected: {command.expected}\n"
            f"gateway log (last lines):\n{harness.log_tail()}"
        )


@pytest.mark.timeout(600)
def test_every_documented_command_works_in_order(tmp_path: Path) -> None:
    if shutil.which("make") is None or shutil.which("curl") is None:
        pytest.fail("make and curl are needed to replay the documents")
    harness = Harness(tmp_path)
    report: dict[str, list[str]] = {"ran": [], "servers": [], "skipped": []}
    try:
        for path in DOCUMENTS:
            document = commands(str(path.relative_to(ROOT)), path.read_text())
            if path.name != "README.md" or path.parent != ROOT:
                if not any(c.text.lstrip().startswith("curl") for c in document):
                    # nothing to ask a gateway: run what runs, without starting one
                    harness.stop_gateway()
                else:
                    harness.make_serve({"ARGS": "--admin-token s3cret"}, {})
            replay(harness, document, report)
    finally:
        harness.close()
    print("\n".join(f"{kind}: {line}" for kind, lines in report.items() for line in lines))
    curls = [line for line in report["ran"] if ": curl" in line]
    # a parsing slip must not turn the test into one that checks nothing
    assert len(curls) >= 30, report
    assert harness.started >= 4, report


def test_commands_are_cut_where_a_shell_would() -> None:
    text = "\n".join(
        [
            "ZERO='[1, 2]'",
            'curl -X POST localhost:8000/x -d "{',
            '  \\"a\\": 1 # not a comment',
            '}"   # {"a":1}',
            "# x-model-version: 2",
            "",
            "# prose",
            'make serve ARGS="--admin-token s3cret" \\',
            "  PORT=1",
        ]
    )
    found = commands("example.md", f"```sh\n{text}\n```\n")
    assert [c.text.split()[0] for c in found] == ["ZERO='[1,", "curl", "make"]
    assert "# not a comment" in found[1].text
    assert found[1].expected == ['{"a":1}', "x-model-version: 2"]
    assert check_output(found[1], '{"a":1}\r\nx-model-version: 2') == []
    assert check_output(found[1], '{"a":2}') != []
