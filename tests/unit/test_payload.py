"""The payload log without a server: tensors come back bit for bit, the writer never
blocks and counts what it drops, files rotate within their bound, and replay's
comparison tells exact from close from different."""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from time import perf_counter

import numpy as np
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from pydantic import ValidationError

from gateway.config import Settings
from gateway.payload import replay as replay_module
from gateway.payload.record import LoggedRequest, PayloadEntry, WallClock, from_json, to_json
from gateway.payload.replay import Unreadable, compare, read_log
from gateway.payload.sinks import FILES_KEPT, FileSink
from gateway.payload.tensors import decode, encode
from gateway.payload.writer import PayloadWriter

NUMERIC = st.sampled_from(
    [np.float16, np.float32, np.float64, np.int8, np.int64, np.uint16, np.bool_]
)


@given(hnp.arrays(NUMERIC, hnp.array_shapes(min_dims=0, max_dims=3, max_side=4)))
def test_numeric_tensors_come_back_bit_for_bit(array: np.ndarray) -> None:
    back = decode(_through_json(array))
    assert back.dtype == array.dtype and back.shape == array.shape
    assert back.tobytes() == array.tobytes()  # NaN payloads and -0.0 included


def test_strided_and_big_endian_tensors_are_logged_as_their_values() -> None:
    grid = np.arange(24, dtype=np.float32).reshape(4, 6)
    for array in (grid[:, ::2], grid.T, grid.astype(">f4"), grid.astype(">i8")[1:3]):
        back = decode(_through_json(array))
        assert back.shape == array.shape and back.dtype.isnative
        assert np.array_equal(back, array)


def _through_json(array: np.ndarray) -> dict[str, object]:
    """A tensor as a replay reads it: its record form written and parsed again."""
    document = orjson.loads(orjson.dumps({"t": encode(array)}))["t"]
    assert isinstance(document, dict)
    return document


def test_bytes_tensors_and_bad_documents() -> None:
    texts = np.array([b"\x00\xff", b"", "caf\u00e9".encode()], dtype=object)
    assert list(decode(_through_json(texts))) == list(texts)
    document = _through_json(np.zeros((2, 2), dtype=np.float32))
    for broken, message in [
        ({**document, "shape": [3, 2]}, "do not hold"),
        ({**document, "datatype": "FP8"}, "unknown datatype"),
        ({**document, "shape": [-1]}, "is not a tensor's"),
    ]:
        with pytest.raises(ValueError, match=message):
            decode(broken)


def _entry(n: int = 0) -> PayloadEntry:
    return PayloadEntry(
        at=perf_counter(),
        request_id=f"r{n}",
        model="m",
        version="1",
        routing="weights",
        protocol="v2",
        inputs={"x": np.full((1, 2), n, dtype=np.float32)},
        outputs=[("y", np.full((1, 3), n, dtype=np.float32))],
    )


def test_a_record_round_trips_and_a_foreign_one_says_why() -> None:
    back = from_json(to_json(_entry(7)))
    assert (back.model, back.version, back.request_id) == ("m", 1, "r7")
    assert back.outputs["y"].tolist() == [[7.0, 7.0, 7.0]]
    with pytest.raises(ValueError, match="schema 2; this gateway reads schema 1"):
        from_json(b'{"schema": 2}')
    with pytest.raises(ValueError, match="not a payload record"):
        from_json(b'{"schema": 1, "model": "m"}')


class Counting:
    def __init__(self) -> None:
        self.written = 0
        self.dropped: dict[str, int] = {}

    def wrote(self, count: int) -> None:
        self.written += count

    def dropped_records(self, reason: str, count: int = 1) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + count


class SlowSink:
    """Blocks every write until released: a sink that has stopped answering."""

    description = "a stuck sink"

    def __init__(self, fail: bool = False) -> None:
        self.release = threading.Event()
        self.lines: list[bytes] = []
        self.fail = fail

    def write(self, blocks: Sequence[bytes]) -> None:
        self.release.wait(10)
        if self.fail:
            raise ConnectionError("refused")
        self.lines.extend(line for block in blocks for line in block.split(b"\n")[:-1])

    def close(self) -> None:
        pass


def test_a_stuck_sink_never_blocks_submit_and_drops_are_counted() -> None:
    sink, counts = SlowSink(), Counting()
    writer = PayloadWriter(sink, counts, size=10)
    for n in range(50):  # returns at once although nothing is written
        writer.submit(_entry(n))
    assert counts.dropped["queue_full"] >= 50 - 10 - 1  # what neither the queue nor the writer held
    sink.release.set()
    writer.close(5.0)  # writes what is queued
    assert counts.written == len(sink.lines) and counts.written + counts.dropped["queue_full"] == 50


def test_a_failing_sink_counts_its_batch_as_dropped() -> None:
    sink, counts = SlowSink(fail=True), Counting()
    sink.release.set()
    writer = PayloadWriter(sink, counts)
    writer.submit(_entry())
    writer.close(5.0)
    assert counts.dropped == {"sink_error": 1} and counts.written == 0


def test_files_rotate_and_only_the_last_ones_are_kept(tmp_path: Path) -> None:
    sink = FileSink(tmp_path, max_bytes=100, pid=42)
    for n in range(FILES_KEPT + 5):
        sink.write([b"x" * 120 + b"\n", f"{n}\n".encode()])  # past the size: the next file
    sink.close()
    files = sorted(tmp_path.glob("payload-42-*.jsonl"), key=lambda p: int(p.stem.split("-")[2]))
    assert len(files) == FILES_KEPT  # the one being written among them
    assert files[-2].read_bytes().endswith(f"{FILES_KEPT + 4}\n".encode())
    again = FileSink(tmp_path, max_bytes=100, pid=42)  # a restarted worker goes on numbering
    again.close()
    assert (tmp_path / f"payload-42-{FILES_KEPT + 7}.jsonl").exists()


def test_compare_tells_exact_from_close_from_different() -> None:
    logged = {"p": np.array([[0.1, 0.9], [0.8, 0.2]], dtype=np.float32)}
    assert compare(logged, {"p": logged["p"].copy()}).exact
    close = compare(logged, {"p": logged["p"] + np.float32(1e-7)})
    assert not close.exact and not close.disagrees and 0 < close.max_abs_diff < 1e-6
    swapped = compare(logged, {"p": logged["p"][:, ::-1].copy()})
    assert swapped.disagrees and swapped.max_abs_diff == pytest.approx(0.8)
    assert compare(logged, {}).max_abs_diff == float("inf")


def test_a_line_too_long_to_be_a_record_is_skipped_without_holding_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record_line = to_json(_entry(3))
    limit = len(record_line) + 10
    monkeypatch.setattr(replay_module, "MAX_LINE_BYTES", limit)
    log = tmp_path / "payload-1-1.jsonl"
    log.write_bytes(b"x" * (limit * 5) + b"\n" + record_line + b"\n")
    unreadable, record = list(read_log(str(tmp_path)))
    assert isinstance(unreadable, Unreadable) and unreadable.where == f"{log} line 1"
    assert unreadable.why == f"longer than {limit:,} bytes"
    assert isinstance(record, LoggedRequest) and record.request_id == "r3"


def test_the_payload_log_url_is_checked() -> None:
    assert Settings(payload_log="file:///var/log/p").payload_log == "file:///var/log/p"
    assert Settings(payload_log="redis://r:6379/s?db=2").payload_log == "redis://r:6379/s?db=2"
    for bad, message in [
        ("file://relative/dir", "expected file:///ABSOLUTE/DIR"),
        ("s3://bucket/p", "expected file:///DIR or redis://HOST:PORT/STREAM"),
    ]:
        with pytest.raises(ValidationError, match=re.escape(message)):
            Settings(payload_log=bad)
    with pytest.raises(ValidationError, match="less than or equal to 1"):
        Settings(payload_sample=1.5)


def test_a_record_is_stamped_with_the_wall_clock_time_its_answer_was_sent() -> None:
    entry = _entry()
    entry.at = perf_counter() - 2.0  # answered two seconds before the writer's batch
    stamped = datetime.fromisoformat(orjson.loads(to_json(entry, WallClock()))["time"])
    assert stamped.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - timedelta(seconds=2) - stamped) < timedelta(seconds=1)
