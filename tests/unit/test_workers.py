"""WorkerGroup: readiness marks and what dead workers leave behind, in a real directory."""

from __future__ import annotations

import os
from pathlib import Path

from gateway.workers import WorkerGroup, shared_directory


def _dead_pid() -> int:
    """A pid no process has: above the largest the kernel hands out (no process is started
    to find one)."""
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    pid = pid_max + 1
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return pid
    raise AssertionError(f"pid {pid} answers signal 0")


def test_ready_only_when_every_worker_has_joined(tmp_path: Path) -> None:
    # this test process and its parent stand for the two workers: two pids that are alive
    first = WorkerGroup(tmp_path, size=2)
    second = WorkerGroup(tmp_path, size=2, pid=os.getppid())
    first.joined(ready=True)
    assert not first.all_ready() and not second.all_ready()
    second.joined(ready=True)
    assert first.all_ready() and second.all_ready()
    second.report(ready=False)  # e.g. its only model failed a reload
    assert not first.all_ready()
    second.report(ready=True)
    assert first.all_ready()
    second.left()
    assert not first.all_ready()


def test_a_dead_worker_does_not_count_and_is_cleaned_up(tmp_path: Path) -> None:
    dead = _dead_pid()
    (tmp_path / f"ready-{dead}").touch()
    (tmp_path / f"gauge_livesum_{dead}.db").write_bytes(b"")
    (tmp_path / f"counter_{dead}.db").write_bytes(b"")
    group = WorkerGroup(tmp_path, size=2)
    assert not group.all_ready()  # its mark is there, but it is gone
    group.joined(ready=True)
    assert not (tmp_path / f"ready-{dead}").exists()
    assert not (tmp_path / f"gauge_livesum_{dead}.db").exists()
    # what it counted before it died still counts
    assert (tmp_path / f"counter_{dead}.db").exists()
    group.size = 1
    assert group.all_ready()


def test_a_worker_with_nothing_to_serve_does_not_mark_itself(tmp_path: Path) -> None:
    group = WorkerGroup(tmp_path, size=1)
    group.joined(ready=False)
    assert not group.all_ready()
    assert not list(tmp_path.glob("ready-*"))


def test_shared_directory_is_removed_afterwards() -> None:
    with shared_directory() as path:
        (path / "counter_1.db").write_bytes(b"x")
        assert path.is_dir()
    assert not path.exists()
