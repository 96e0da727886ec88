"""``loadtests/handler_cost.py``: every variant (the gateway's handler, the lean
yardstick, and each step made free) runs and answers 200, so a step renamed or changed
in the gateway breaks this test, not the next measurement."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from loadtests.handler_cost import FREE_STEPS, VARIANTS
from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def test_every_variant_serves_its_requests() -> None:
    assert set(VARIANTS) == {"gateway", "lean", *(f"free:{s}" for s in FREE_STEPS)}
    command = [sys.executable, "-m", "loadtests.handler_cost", "--model", "mlp"]
    command += ["--concurrency", "8", "--requests", "64", "--rounds", "2", "--worker"]
    # each in its own process (a free step patches the gateway it runs), all at once
    runs = {
        variant: subprocess.Popen(
            [*command, variant], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for variant in VARIANTS
    }
    for variant, run in runs.items():
        output, errors = run.communicate(timeout=110)
        assert run.returncode == 0, f"{variant}: {errors.decode()[-2000:]}"
        result = json.loads(output.decode().strip().splitlines()[-1])
        assert result["variant"] == variant
        # two rounds measured, each a CPU time per request well above nothing
        assert len(result["us"]) == 2 and all(0.5 < us < 1e6 for us in result["us"])


def test_a_step_the_gateway_no_longer_has_fails_loudly() -> None:
    from loadtests import handler_cost

    with pytest.raises(AttributeError, match="has no no_such_step to replace"):
        handler_cost._replace(handler_cost, "no_such_step", None)
