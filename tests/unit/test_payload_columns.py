"""The writer's column-wise encoding of a batch: every record parses to what
``to_json`` writes for it, whether its group went through the byte matrix or not."""

from __future__ import annotations

from collections.abc import Callable
from time import perf_counter
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gateway.payload import columns
from gateway.payload.columns import MIN_GROUP, Encoded, encode_batch
from gateway.payload.record import PayloadEntry, WallClock, to_json

DTYPES = [np.float32, np.float64, np.float16, np.int8, np.int64, np.uint16, np.bool_]


def _entry(
    n: int,
    inputs: dict[str, np.ndarray],
    outputs: list[tuple[str, np.ndarray]],
    **fields: Any,
) -> PayloadEntry:
    return PayloadEntry(
        fields.pop("at", perf_counter()),
        fields.pop("request_id", f"{n:08x}"),
        fields.pop("model", "mlp"),
        fields.pop("version", "1"),
        fields.pop("routing", "weights"),
        fields.pop("protocol", "v2"),
        inputs,
        outputs,
        queue_s=fields.pop("queue_s", 0.000412 + n * 1e-7),
        inference_s=fields.pop("inference_s", 0.0011),
        **fields,
    )


def _plain(n: int, rows: int = 1, width: int = 64) -> PayloadEntry:
    rng = np.random.default_rng(n)
    x = rng.standard_normal((rows, width)).astype(np.float32)
    return _entry(n, {"input": x}, [("output", np.tanh(x[:, :10]))])


def _parsed(lines: list[bytes]) -> dict[str, Any]:
    records = [orjson.loads(line) for line in lines]
    return {record["request_id"]: record for record in records}


def _agrees(entries: list[PayloadEntry]) -> list[bytes]:
    clock = WallClock()
    encoded = encode_batch(entries, clock)
    assert encoded.failed == 0 and encoded.records == len(entries)
    assert all(block.endswith(b"\n") for block in encoded.blocks)
    lines = b"".join(encoded.blocks).split(b"\n")[:-1]
    assert len(lines) == len(entries)
    assert _parsed(lines) == _parsed([to_json(entry, clock) for entry in entries])
    return lines


def _counting_to_json(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    one_by_one: Callable[..., bytes] = to_json

    def counted(*args: Any) -> bytes:
        calls[0] += 1
        return one_by_one(*args)

    monkeypatch.setattr(columns, "to_json", counted)
    return calls


def test_a_group_of_plain_records_is_one_matrix(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _counting_to_json(monkeypatch)
    lines = _agrees([_plain(n) for n in range(200)])
    assert calls[0] == 0
    assert len(encode_batch([_plain(n) for n in range(200)], WallClock()).blocks) == 1
    assert len(set(map(len, lines))) == 1  # the same width for every row


def test_records_that_do_not_fit_are_encoded_one_by_one(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _counting_to_json(monkeypatch)
    grid = np.arange(24, dtype=np.float32).reshape(4, 6)
    odd = [
        _entry(1, {"input": grid[:, ::2]}, [("output", grid)]),  # strided
        _entry(2, {"input": grid.astype(">f4")}, [("output", grid)]),  # big-endian
        _entry(3, {"text": np.array([b"a", b"\xff"], dtype=object)}, [("output", grid)]),
        _entry(4, {"input": grid}, [("output", grid)], queue_s=12.5),  # 10 s or more
        _entry(5, {"input": grid}, [("output", grid)], inference_s=None),
        _entry(6, {"input": grid}, [("output", grid)], request_id='quote"and\\slash'),
        _entry(7, {"input": grid}, [("output", grid)], request_id="caf\u00e9"),
        _entry(
            8,
            {"input": grid},
            [("output", grid)],
            entity_input="user_id",
            entity_ids=np.array([7, 8]),
            rows_from_store=1,
            rows_defaulted=1,
        ),
        _entry(9, {"input": grid}, [("output", grid)], shadow_version="2", shadow_outputs=[grid]),
        _entry(10, {"input": grid}, [("output", grid)], shadow_version="2", shadow_error="down"),
    ]
    # each odd one sits in a group of plain records that otherwise would fit
    plain = [_entry(100 + n, {"input": grid}, [("output", grid)]) for n in range(MIN_GROUP)]
    _agrees(odd + plain)
    assert calls[0] >= len(odd)


def test_unequal_shapes_or_names_in_one_group_are_told_apart() -> None:
    rows = [_plain(n, rows=1 + n % 3) for n in range(3 * MIN_GROUP)]
    _agrees(rows)
    named = [_plain(n) for n in range(2 * MIN_GROUP)]
    for entry in named[::2]:
        entry.outputs = [("logits", entry.outputs[0][1])]
    _agrees(named)


def test_a_failing_record_is_counted_and_the_rest_are_written() -> None:
    grid = np.ones((1, 2), dtype=np.complex64)  # no OIP datatype
    entries = [_plain(n) for n in range(MIN_GROUP)] + [_entry(99, {"c": grid}, [("o", grid)])]
    encoded = encode_batch(entries, WallClock())
    assert encoded.failed == 1 and encoded.records == MIN_GROUP
    assert encode_batch([], WallClock()) == Encoded([])


@st.composite
def _groups(draw: st.DrawFn) -> list[PayloadEntry]:
    dtype = draw(st.sampled_from(DTYPES))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5))
    size = draw(st.integers(MIN_GROUP, 3 * MIN_GROUP))
    id_width = draw(st.integers(1, 40))
    entries = []
    for n in range(size):
        x = draw(hnp.arrays(dtype, shape))
        y = draw(hnp.arrays(np.float32, (2, 3)))
        # one wait in ten is too long for the matrix
        waits = st.integers(0, 9).flatmap(
            lambda k: st.floats(10, 1e4) if k == 0 else st.floats(0, 9.999)
        )
        entries.append(
            _entry(
                n,
                {"x": x},
                [("y", y), ("x_again", x)],
                request_id=f"{n:0{id_width}d}"[-id_width:] + ("" if n < 10**id_width else "+"),
                queue_s=draw(waits),
                inference_s=draw(waits),
                at=perf_counter() - draw(st.floats(0, 5)),
            )
        )
    return entries


@settings(max_examples=60, deadline=None)
@given(_groups())
def test_any_batch_parses_to_what_to_json_writes(entries: list[PayloadEntry]) -> None:
    unique = {entry.request_id: entry for entry in entries}
    _agrees(list(unique.values()))
