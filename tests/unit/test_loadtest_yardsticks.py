"""The pure parts of the benchmark's yardsticks (issue 19): the one-core limit from the
floor and the ceiling, and the profile's split of py-spy samples into request steps."""

from __future__ import annotations

import math

import pytest

from loadtests.benchmark import Row, median_row, rotated
from loadtests.limits import limits, row_cost_us
from loadtests.procstat import metric_totals
from loadtests.profile_request import (
    IDLE,
    OTHER,
    batch_distribution,
    step_of,
)

BOOT = ["<module> (gateway/__main__.py:3)", "main (gateway/cli/__init__.py:147)"]
LOOP = [*BOOT, "Server.run (uvicorn/server.py:86)", "Runner.run (asyncio/runners.py:118)"]


def test_rounds_rotate_so_that_nothing_always_runs_first() -> None:
    servers = ["gateway", "baseline", "floor"]
    assert [rotated(servers, i) for i in range(4)] == [
        ["gateway", "baseline", "floor"],
        ["baseline", "floor", "gateway"],
        ["floor", "gateway", "baseline"],
        ["gateway", "baseline", "floor"],
    ]
    assert [rotated(("a", "b"), i) for i in range(3)] == [["a", "b"], ["b", "a"], ["a", "b"]]


def test_a_level_measured_in_rounds_keeps_the_median_of_each_figure() -> None:
    runs = [
        Row("gateway", "mlp", "closed", "64c", 900.0, 1.0, 2.0, 9.0, 20.0, 1, 110.0, 20.0),
        Row("gateway", "mlp", "closed", "64c", 1000.0, 3.0, 4.0, 5.0, 10.0, 0, 100.0, 22.0),
        Row("gateway", "mlp", "closed", "64c", 1200.0, 2.0, 3.0, 7.0, 30.0, 2, 90.0, 21.0),
    ]
    level = median_row(runs)
    assert (level.server, level.model, level.mode, level.level) == (
        "gateway",
        "mlp",
        "closed",
        "64c",
    )
    assert (level.rps, level.p50_ms, level.p90_ms, level.p99_ms, level.p999_ms) == (
        1000.0,
        2.0,
        3.0,
        7.0,
        20.0,
    )
    assert (level.errors, level.cpu_us, level.batch) == (3, 100.0, 21.0)
    floor = median_row([Row("floor", "mlp", "closed", "64c", 5000.0, cpu_us=40.0)] * 2)
    assert math.isnan(floor.batch) and floor.cpu_us == 40.0  # not measured: stays NaN


def test_row_cost_is_interpolated_between_measured_batch_sizes_and_clamped() -> None:
    rows_per_s = {1: 1000.0, 4: 4000.0, 16: 8000.0}  # 1000, 250, 125 us a row
    assert row_cost_us(rows_per_s, 1) == pytest.approx(1000)
    assert row_cost_us(rows_per_s, 2) == pytest.approx(625)  # halfway in log(batch)
    assert row_cost_us(rows_per_s, 16) == pytest.approx(125)
    assert row_cost_us(rows_per_s, 64) == pytest.approx(125)
    assert row_cost_us(rows_per_s, 0.5) == pytest.approx(1000)


def test_the_limit_adds_the_floor_cpu_to_one_row_at_the_gateways_batch_size() -> None:
    rows = [
        Row("onnxruntime", "wide", "in-process", "batch 1", 2000.0),
        Row("onnxruntime", "wide", "in-process", "batch 32", 4000.0),
        Row("floor", "wide", "closed", "64c", 10000.0, cpu_us=100.0),
        Row("gateway", "wide", "closed", "64c", 2000.0, cpu_us=450.0, batch=32.0),
        Row("gateway", "wide", "closed", "1c", 400.0, cpu_us=2000.0, batch=1.0),  # no floor
        Row("naive", "wide", "closed", "64c", 200.0, cpu_us=5000.0),
    ]
    (found,) = limits(rows)
    assert (found.server, found.level, found.row_us) == ("gateway", "64c", 250.0)
    assert found.limit_rps == pytest.approx(1e6 / 350)
    assert found.of_floor == pytest.approx(0.2)
    assert found.of_limit == pytest.approx(2000 * 350 / 1e6)


@pytest.mark.parametrize(
    ("leaf", "step"),
    [
        (["OnnxModel.run (gateway/repository/session.py:110)", "run (onnxruntime/x.py:1)"], "run"),
        (["load_object (gateway/protocol/jsonbody.py:20)"], "parse JSON"),
        (["decode_request (gateway/protocol/v2.py:59)"], "to numpy"),
        (["encode_response (gateway/protocol/v2.py:170)"], "encode"),
        (["stack (gateway/batching/assemble.py:40)"], "concatenate"),
        (["Metrics.request_done (gateway/metrics.py:310)"], "bookkeeping"),
        (
            ["RequestResponseCycle.send (uvicorn/protocols/http/httptools_impl.py:522)"],
            "HTTP server",
        ),
        (["ConnectionExchange.respond (gateway/http/exchange.py:174)"], "HTTP server"),
        (["InferenceEndpoint.handle (gateway/http/inference.py:113)"], "request path glue"),
        ([], OTHER),  # nothing below the event loop: uvloop's C code
    ],
)
def test_a_sample_is_put_in_the_step_of_its_innermost_known_frame(
    leaf: list[str], step: str
) -> None:
    assert step_of([*LOOP, *leaf]) == step


def test_an_inference_thread_waiting_for_work_is_idle() -> None:
    from loadtests.profile_request import IDLE_WAIT

    waiting = ["Thread.run (threading.py:982)", f"_serve (gateway/repository/{IDLE_WAIT}"]
    assert step_of(waiting) == IDLE
    working = [*waiting[:1], "_serve (gateway/repository/threads.py:1)"]
    assert step_of(working) == "queue and hand-off"


def test_batch_sizes_are_read_from_the_histograms_cumulative_buckets() -> None:
    def text(ones: int, fulls: int) -> str:
        lines = []
        for le, count in [("1.0", ones), ("16.0", ones), ("32.0", ones + fulls)]:
            lines.append(f'gateway_batch_size_bucket{{le="{le}",model="mlp",version="1"}} {count}')
        lines.append(f'gateway_batch_size_count{{model="mlp",version="1"}} {ones + fulls}')
        lines.append('gateway_batch_size_count{model="wide",version="1"} 99')
        return "\n".join(lines) + "\n"

    families = ("gateway_batch_size",)
    before = metric_totals(text(10, 0), "mlp", families)
    after = metric_totals(text(20, 30), "mlp", families)
    assert after["gateway_batch_size_count"] == 50
    assert batch_distribution(before, after) == "<= 1: 25%, 16-32: 75%"
    assert batch_distribution(after, after) == "no batches"
    assert math.isclose(after["gateway_batch_size_bucket|32.0"], 50)
