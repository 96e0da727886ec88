"""`python -m gateway models check` as a user runs it: a real process on the bundled models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_models_check_accepts_the_bundled_examples() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "models", "check", "models"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "input  pixels: FP32 [-1, 64]" in result.stdout
    assert "output probabilities: FP32 [-1, 10]" in result.stdout
    assert "model fraud" in result.stdout and "OK: 2 model(s)" in result.stdout
