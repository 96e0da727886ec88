"""A writer's batch of payload records encoded column by column.

``to_json`` builds a dict per record and costs about as much CPU as a fifth of a
small model's whole request; with every request logged, that alone broke SPEC 14's
5% budget. But the records one version writes differ only in a few fields of fixed
width once their layout is fixed (input and output names, dtypes and shapes, the
request id's length): so such a group is one byte matrix, a row per record, built
with a handful of numpy calls whatever its size. Constant text is broadcast; times,
request ids and the two durations are written as digits and characters; each tensor
is base64-encoded for the whole group in one ``b2a_base64`` call, every row padded
to a multiple of three bytes so that its text starts at a fixed column, and its
padding characters set to ``=`` as if it had been encoded alone.

A record parses to exactly what ``to_json`` writes for it (a test checks that).
What does not fit the matrix goes through ``to_json``: records with features or a
shadow, request ids that JSON would escape, durations of 10 s or more, tensors of
BYTES, of other byte orders or of unequal shapes, and groups too small to pay for
the numpy calls.
"""

from __future__ import annotations

import binascii
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import orjson

from gateway.payload.record import SCHEMA, PayloadEntry, WallClock, second_prefix, to_json
from gateway.payload.tensors import LITTLE_ENDIAN, tensor_head

log = logging.getLogger("gateway.payload")

# below this many records, to_json one by one is cheaper than the numpy calls
MIN_GROUP = 16
# printable ASCII but for the two characters JSON escapes: written as they are
_PLAIN = re.compile(r"[ !#-\[\]-~]*")
_DIGIT = ord("0")
_PLACES = 10 ** np.arange(6, -1, -1, dtype=np.int64)  # 10**6 .. 1
_MICRO = 1_000_000

GroupKey = tuple[str, str, str, str, int, int, int] | None


@dataclass(slots=True)
class Encoded:
    """What ``encode_batch`` made of a batch: ``blocks`` of one or more records, each
    record a line ending in a newline, and the count of records in them and of those
    that could not be encoded (each is logged)."""

    blocks: list[bytes]
    records: int = 0
    failed: int = 0


def encode_batch(entries: Sequence[PayloadEntry], clock: WallClock) -> Encoded:
    """``entries`` as lines; a record that does not encode must not stop the log."""
    if not entries:
        return Encoded([])
    keys: list[GroupKey] = [
        (
            entry.model,
            entry.version,
            entry.routing,
            entry.protocol,
            len(entry.request_id),
            len(entry.inputs),
            len(entry.outputs),
        )
        if entry.entity_input is None
        and entry.shadow_version is None
        and entry.queue_s is not None
        and entry.inference_s is not None
        else None
        for entry in entries
    ]
    groups: dict[GroupKey, list[PayloadEntry]]
    if keys.count(keys[0]) == len(keys):  # the usual batch: one model, one version
        groups = {keys[0]: list(entries)}
    else:
        groups = {}
        for key, entry in zip(keys, entries, strict=True):
            groups.setdefault(key, []).append(entry)
    encoded = Encoded([])
    single = groups.pop(None, [])
    for group in groups.values():
        single.extend(_matrix(group, clock, encoded))
    for entry in single:
        try:
            encoded.blocks.append(to_json(entry, clock) + b"\n")
            encoded.records += 1
        except Exception:
            log.exception("payload record of request %s not encodable", entry.request_id)
            encoded.failed += 1
    return encoded


def _matrix(group: list[PayloadEntry], clock: WallClock, encoded: Encoded) -> list[PayloadEntry]:
    """Encodes what it can of one group (one version, routing and protocol, one length
    of request id, one number of inputs and of outputs) into ``encoded``; returns the
    records left for ``to_json``."""
    if len(group) < MIN_GROUP:
        return group
    if _PLAIN.fullmatch("".join([entry.request_id for entry in group])) is None:
        # a few ids JSON would escape: those go one by one, not the whole group
        left = [entry for entry in group if not _PLAIN.fullmatch(entry.request_id)]
        plain = [entry for entry in group if _PLAIN.fullmatch(entry.request_id)]
        return left + _matrix(plain, clock, encoded)
    durations = np.rint(
        np.array([[entry.queue_s for entry in group], [entry.inference_s for entry in group]])
        * _MICRO
    ).astype(np.int64)
    short = ((durations >= 0) & (durations < 10 * _MICRO)).all(axis=0)
    if not short.all():
        left = [entry for entry, fits in zip(group, short.tolist(), strict=True) if not fits]
        kept = [entry for entry, fits in zip(group, short.tolist(), strict=True) if fits]
        return left + _matrix(kept, clock, encoded)
    first = group[0]
    if not first.inputs:
        return group
    name = next(iter(first.inputs))
    try:
        shapes = [entry.inputs[name].shape for entry in group]
    except KeyError:
        return group
    if shapes.count(shapes[0]) != len(shapes):  # requests of different row counts
        by_shape: dict[tuple[int, ...], list[PayloadEntry]] = {}
        for shape, entry in zip(shapes, group, strict=True):
            by_shape.setdefault(shape, []).append(entry)
        return [left for part in by_shape.values() for left in _matrix(part, clock, encoded)]
    block = _block(group, durations, clock)
    if block is None:
        return group
    encoded.blocks.append(block)
    encoded.records += len(group)
    return []


def _block(group: list[PayloadEntry], durations: np.ndarray, clock: WallClock) -> bytes | None:
    """The group's records, each ending in a newline; None where its tensors do not
    share names, dtypes and shapes."""
    first = group[0]
    n = len(group)
    input_names = list(first.inputs)
    output_names = [name for name, _ in first.outputs]
    seconds, fractions = np.divmod(_micros(group, clock), _MICRO)
    # the digits of the time's microseconds and of both durations, in one go
    digits = _digits(np.stack([fractions, durations[0], durations[1]], axis=1), 7)
    segments = _Segments(n)
    segments.text(b'{"schema":%d,"time":' % SCHEMA)
    segments.add(_second_prefixes(seconds))
    segments.add(digits[:, 0, 1:])
    segments.text(b'+00:00","request_id":"')
    ids = "".join([entry.request_id for entry in group]).encode("ascii")
    segments.add(np.frombuffer(ids, np.uint8).reshape(n, len(first.request_id)))
    labels = (first.model, first.version, first.routing, first.protocol)
    segments.text(
        b'","model":%s,"version":%s,"routing":%s,"protocol":%s,"inputs":{'
        % tuple(orjson.dumps(label) for label in labels)
    )
    try:
        for number, name in enumerate(input_names):
            arrays = [entry.inputs[name] for entry in group]
            if not _tensor(segments, name, arrays, number):
                return None
        segments.text(b'},"outputs":{')
        for number, name in enumerate(output_names):
            if [entry.outputs[number][0] for entry in group].count(name) != n:
                return None
            arrays = [entry.outputs[number][1] for entry in group]
            if not _tensor(segments, name, arrays, number):
                return None
    except (KeyError, TypeError, BufferError, ValueError):
        return None
    for row, field in ((1, b'},"queue_s":'), (2, b',"inference_s":')):
        # a duration under 10 s as d.dddddd
        segments.text(field)
        segments.add(digits[:, row, :1])
        segments.text(b".")
        segments.add(digits[:, row, 1:])
    segments.text(b"}\n")
    return segments.joined()


class _Segments:
    """The columns of a group's byte matrix, left to right; the constant text between
    two columns is one segment, the same bytes in every row."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.parts: list[np.ndarray] = []
        self.constant = b""

    def text(self, constant: bytes) -> None:
        self.constant += constant

    def add(self, column: np.ndarray) -> None:
        self._flush()
        self.parts.append(column)

    def joined(self) -> bytes:
        self._flush()
        return np.concatenate(self.parts, axis=1).tobytes()

    def _flush(self) -> None:
        if self.constant:
            # a view with a row stride of 0 (np.broadcast_to does the same in Python,
            # five times slower)
            constant, self.constant = self.constant, b""
            self.parts.append(np.ndarray((self.rows, len(constant)), np.uint8, constant, 0, (0, 1)))


def _micros(group: list[PayloadEntry], clock: WallClock) -> np.ndarray:
    """``WallClock.micros`` of every row at once (the same arithmetic, so the same
    times as ``to_json`` writes)."""
    readings = np.array([entry.at for entry in group], dtype=np.float64)
    return np.rint((clock.wall + (readings - clock.perf)) * 1e6).astype(np.int64)


def _second_prefixes(seconds: np.ndarray) -> np.ndarray:
    """``record.second_prefix`` of every row: a batch spans a second or two."""
    low, high = int(seconds.min()), int(seconds.max())
    if low == high:
        prefix = second_prefix(low)
        return np.ndarray((len(seconds), len(prefix)), np.uint8, prefix, 0, (0, 1))
    distinct, which = np.unique(seconds, return_inverse=True)
    prefixes = b"".join([second_prefix(int(second)) for second in distinct])
    table = np.frombuffer(prefixes, np.uint8).reshape(len(distinct), -1)
    return table[which.reshape(-1)]


def _digits(values: np.ndarray, width: int) -> np.ndarray:
    """Non-negative integers below 10**width as ``width`` zero-padded digits each (a
    new last axis)."""
    places = _PLACES[-width:]
    return (values[..., None] // places % 10 + _DIGIT).astype(np.uint8)


def _tensor(segments: _Segments, name: str, arrays: list[np.ndarray], number: int) -> bool:
    """``"name":TENSOR`` (as ``tensors.encode`` writes it) for one tensor of every row;
    False where the rows' tensors differ in dtype or shape or are not plain numbers."""
    first = arrays[0]
    dtype, shape = first.dtype, first.shape
    if dtype.kind in "OSUV" or not dtype.isnative or not LITTLE_ENDIAN:
        return False
    n = len(arrays)
    if [array.dtype for array in arrays].count(dtype) != n:
        return False
    if [array.shape for array in arrays].count(shape) != n:
        return False
    segments.text(b"%s%s:" % (b"," if number else b"", orjson.dumps(name)))
    segments.text(tensor_head(first))
    size = first.nbytes
    if size:
        pad = -size % 3
        filler = b"\0" * pad
        # bytes.join takes the arrays' buffers as they are: no copy per row, and a
        # TypeError for one that is not contiguous
        raw = filler.join(arrays) + filler  # type: ignore[arg-type]  # arrays are buffers
        text = binascii.b2a_base64(raw, newline=False)
        column = np.frombuffer(text, np.uint8).reshape(len(arrays), -1)
        if pad:
            segments.add(column[:, :-pad])
            segments.text(b"=" * pad)
        else:
            segments.add(column)
    segments.text(b'"}')
    return True
