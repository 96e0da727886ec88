"""Scanning a repository directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import InvalidRequest
from gateway.protocol.signature import TensorSpec, check_shape
from gateway.repository.layout import is_valid_model_name, scan_repository


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def test_scan_finds_models_and_versions(tmp_path: Path) -> None:
    _touch(tmp_path / "alpha" / "1" / "model.onnx")
    _touch(tmp_path / "alpha" / "12" / "model.onnx")
    _touch(tmp_path / "alpha" / "model.toml")
    _touch(tmp_path / "alpha" / "3" / "notes.txt")  # no model.onnx: reported
    _touch(tmp_path / "alpha" / "01" / "model.onnx")  # not a canonical version number
    _touch(tmp_path / "alpha" / "0" / "model.onnx")  # versions are positive
    _touch(tmp_path / "beta" / "2" / "model.onnx")
    _touch(tmp_path / ".hidden" / "1" / "model.onnx")
    _touch(tmp_path / "bad name" / "1" / "model.onnx")
    _touch(tmp_path / "README.md")
    scan = scan_repository(tmp_path)
    assert sorted(scan.models) == ["alpha", "beta"]
    assert sorted(scan.models["alpha"].versions) == [1, 12]
    assert scan.models["alpha"].config_path == tmp_path / "alpha" / "model.toml"
    assert any("alpha/3" in s and "no model.onnx" in s for s in scan.skipped)
    assert any("bad name" in s for s in scan.skipped)


def test_missing_repository(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        scan_repository(tmp_path / "nope")


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("digits", True),
        ("a.b-c_D9", True),
        (".", False),
        ("..", False),
        ("a/b", False),
        ("", False),
        ("x" * 128, True),
        ("x" * 129, False),
        ("é", False),
    ],
)
def test_model_names(name: str, valid: bool) -> None:
    assert is_valid_model_name(name) is valid


def test_shape_check_message() -> None:
    spec = TensorSpec("x", "FP32", (-1, 64))
    check_shape(spec, (5, 64))
    with pytest.raises(InvalidRequest) as caught:
        check_shape(spec, (1, 63))
    assert caught.value.message == (
        "input 'x': expected shape [-1, 64] (-1 = any size), got [1, 63]"
    )
    with pytest.raises(InvalidRequest):
        check_shape(spec, (64,))
