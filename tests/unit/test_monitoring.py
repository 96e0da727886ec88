"""Drift monitoring's pure parts: PSI against hand-computed values, profiles built and
read back, and the batch binner agreeing with numpy's searchsorted."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from pathlib import Path
from typing import cast

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gateway.errors import ConfigError
from gateway.monitoring import profile as profile_module
from gateway.monitoring.binning import Binner
from gateway.monitoring.profile import (
    ColumnProfile,
    Profile,
    bin_fractions,
    build_profile,
    check_profile,
    load_profile,
)
from gateway.monitoring.psi import FLOOR, psi, psi_by_column
from gateway.monitoring.window import DriftWindow
from gateway.protocol.signature import Signature, TensorSpec
from gateway.repository.session import OnnxModel
from gateway.repository.spec import ModelConfig, RuntimeSection
from gateway.repository.version import ModelVersion, VersionInfo
from tests import onnx_models


def test_psi_matches_a_hand_computed_value() -> None:
    reference = np.array([0.25, 0.25, 0.5])
    observed = np.array([50, 25, 25])  # fractions 0.5, 0.25, 0.25
    by_hand = (0.5 - 0.25) * math.log(0.5 / 0.25) + 0 + (0.25 - 0.5) * math.log(0.25 / 0.5)
    assert psi(reference, observed) == pytest.approx(by_hand)  # 0.3466
    assert psi(reference, np.array([25, 25, 50])) == pytest.approx(0.0)
    assert psi(reference, np.zeros(3)) == 0.0  # no rows yet


def test_an_empty_bin_weighs_through_the_floor() -> None:
    value = psi(np.array([1.0, 0.0]), np.array([9, 1]))
    expected = (0.9 - 1.0) * math.log(0.9 / 1.0) + (0.1 - FLOOR) * math.log(0.1 / FLOOR)
    assert value == pytest.approx(expected)


def test_psi_by_column_equals_psi_of_each_column() -> None:
    reference = np.array([0.5, 0.5, 0.2, 0.3, 0.5])
    observed = np.array([10, 30, 5, 5, 0])
    offsets = np.array([0, 2, 5])
    both = psi_by_column(reference, observed, offsets)
    assert both[0] == pytest.approx(psi(reference[:2], observed[:2]))
    assert both[1] == pytest.approx(psi(reference[2:], observed[2:]))


def test_a_built_profile_has_quantile_and_categorical_columns(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    sample: dict[str, np.ndarray] = {
        "x": rng.normal(size=(5000, 2)).astype(np.float32),
        "label": rng.integers(0, 3, size=5000),
        "text": np.array([b"a"] * 5000, dtype=object),  # no columns
    }
    profile = build_profile(sample)
    assert [c.name for c in profile.columns] == ["x[0]", "x[1]", "label"]
    x0, _, label = profile.columns
    assert x0.kind == "quantile" and len(x0.edges) == 11  # min, 9 deciles, past the max
    assert x0.reference[0] == 0 and x0.reference[-1] == 0  # nothing below or above
    assert all(f == pytest.approx(0.1, abs=0.01) for f in x0.reference[1:-1])
    assert label.kind == "categorical" and label.edges == (-0.5, 0.5, 1.5, 2.5)
    assert sum(label.reference) == pytest.approx(1.0)
    path = tmp_path / "profile.json"
    profile.save(path)
    assert load_profile(path) == profile


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (b"{not json", "not JSON"),
        (b'{"format": 2, "rows": 1, "columns": []}', '"format": 1'),
        (
            b'{"format": 1, "rows": 1, "columns": [{"name": "a", "tensor": "a", "index": 0,'
            b' "edges": [2, 1], "reference": [0, 1, 0]}]}',
            "edges must be increasing",
        ),
        (
            b'{"format": 1, "rows": 1, "columns": [{"name": "a", "tensor": "a", "index": 0,'
            b' "edges": [1, 2], "reference": [0.5, 0.5]}]}',
            "2 edges make 3 bins, but reference has 2 fractions",
        ),
        (
            b'{"format": 1, "rows": 1, "columns": [{"name": "a", "tensor": "a", "index": 0,'
            b' "edges": [1, 2], "reference": [0.5, 0.5, 0.5]}]}',
            "sum to 1",
        ),
    ],
)
def test_a_bad_profile_says_what_is_wrong(tmp_path: Path, document: bytes, message: str) -> None:
    path = tmp_path / "profile.json"
    path.write_bytes(document)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_profile(path)


def test_a_profile_too_large_is_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "profile.json"
    path.write_bytes(b" " * 2048)
    monkeypatch.setattr(profile_module, "MAX_PROFILE_BYTES", 1024)
    with pytest.raises(ConfigError, match="2048 bytes; a profile holds at most 1024 bytes"):
        load_profile(path)


def _profile(edges: list[list[float]]) -> Profile:
    columns = tuple(
        ColumnProfile(f"x[{i}]", "x", i, "quantile", tuple(e), (1.0,) + (0.0,) * len(e))
        for i, e in enumerate(edges)
    )
    return Profile(1, columns)


@settings(max_examples=200, deadline=None)
@given(
    edges=st.lists(
        st.lists(st.floats(-100, 100), min_size=1, max_size=8, unique=True).map(sorted),
        min_size=1,
        max_size=5,
    ),
    data=st.data(),
)
def test_the_binner_agrees_with_searchsorted(edges: list[list[float]], data: st.DataObject) -> None:
    columns = len(edges)
    values = data.draw(
        hnp.arrays(
            np.float64,
            (data.draw(st.integers(1, 20)), columns),
            elements=st.floats(allow_nan=True, allow_infinity=True),
        )
    )
    binner = Binner(_profile(edges))
    expected = np.zeros(binner.size, dtype=np.int64)
    for j, column_edges in enumerate(edges):
        bins = np.searchsorted(np.asarray(column_edges), values[:, j], side="right")
        np.add.at(expected, binner.offsets[j] + bins, 1)
    np.testing.assert_array_equal(binner.counts({"x": values}), expected)


def test_the_binner_skips_what_it_cannot_bin() -> None:
    binner = Binner(_profile([[0.0, 1.0], [0.0]]))
    assert binner.counts({}).sum() == 0
    assert binner.counts({"x": np.zeros((3, 1))}).sum() == 0  # not the profiled shape
    assert binner.counts({"x": np.zeros((3, 2))}).sum() == 6


def test_reference_fractions_bin_like_the_binner() -> None:
    column = np.array([0.0, 0.5, 1.0, 2.0, np.nan])
    fractions = bin_fractions(column, (0.0, 1.0))
    assert fractions == (0.0, 0.4, 0.6)  # [0,1): 0.0, 0.5; from 1 up: 1.0, 2.0, nan
    orjson.dumps(fractions)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_window_forgets_what_is_older_than_window_s() -> None:
    clock = FakeClock()
    binner = Binner(_profile([[0.0, 1.0]]))
    window = DriftWindow(binner, window_s=10.0, min_rows=3, now=clock)
    window.observe({"x": np.zeros((2, 1))})
    assert window.totals()[1] == 2 and not window.figures().enough
    clock.now += 5
    window.observe({"x": np.full((2, 1), 5.0)})  # above the reference: drift
    figures = window.figures()
    assert figures.rows == 4 and figures.enough and figures.psi["x[0]"] > 0.25
    clock.now += 6  # the first batch is now older than the window
    assert window.totals()[1] == 2
    clock.now += 10
    assert window.totals()[1] == 0


def test_figures_add_other_workers_totals() -> None:
    binner = Binner(_profile([[0.0, 1.0]]))
    window = DriftWindow(binner, window_s=60.0, min_rows=10, now=FakeClock())
    window.observe({"x": np.zeros((4, 1))})
    other = (np.array([0, 8, 0]), 8)
    figures = window.figures([other])
    assert figures.rows == 12 and figures.enough


def test_a_profile_can_reuse_another_versions_edges() -> None:
    rng = np.random.default_rng(1)
    first = build_profile({"y": rng.normal(size=(1000, 2))})
    second = build_profile({"y": rng.normal(2.0, 1.0, size=(1000, 2))}, like=first)
    assert [c.edges for c in second.columns] == [c.edges for c in first.columns]
    assert second.columns[0].reference != first.columns[0].reference  # its own fractions


class BrokenWindow:
    def observe(self, arrays: Mapping[str, np.ndarray]) -> None:
        raise RuntimeError("a bug in binning")


def test_a_failure_in_monitoring_never_fails_the_batch(tmp_path: Path) -> None:
    """The batch's answer stands; monitoring turns itself off for the version."""
    model_file = onnx_models.write_model(tmp_path, "sum", 1, onnx_models.scaled_sum(1.0))
    model = OnnxModel(model_file, RuntimeSection())
    info = VersionInfo("sum", 1, model_file, model.sha256, tuple(model.providers))
    version = ModelVersion(info, ModelConfig(), model, drift=cast(DriftWindow, BrokenWindow()))

    async def main() -> list[np.ndarray]:
        version.start()
        try:
            inputs: dict[str, np.ndarray] = {
                "a": np.ones((1, 4), np.float32),
                "b": np.ones((1, 4), np.int64),
            }
            return await version.run(inputs, ["sum"])
        finally:
            await version.aclose()

    (total,) = asyncio.run(main())
    np.testing.assert_allclose(total, [[2.0, 2.0, 2.0, 2.0]])
    assert version.drift is None


SIGNATURE = Signature(
    inputs=(TensorSpec("x", "FP32", (-1, 2)), TensorSpec("ids", "BYTES", (-1,))),
    outputs=(TensorSpec("y", "FP32", (-1,)),),
)


@pytest.mark.parametrize(
    ("tensor", "index", "message"),
    [
        ("nope", 0, "'nope', which is not a numeric input or output of the model"),
        ("ids", 0, "'ids', which is not a numeric input or output"),
        ("x", 2, "is position 2 of 'x', whose rows hold 2 values"),
    ],
)
def test_a_profile_that_does_not_fit_the_model_says_why(
    tensor: str, index: int, message: str
) -> None:
    column = ColumnProfile(f"{tensor}[{index}]", tensor, index, "quantile", (0.0,), (0.5, 0.5))
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        check_profile(Profile(1, (column,)), SIGNATURE, Path("profile.json"))
    check_profile(Profile(1, ()), SIGNATURE, Path("profile.json"))  # an empty one fits
