"""Scanning a repository never follows a symlink out of it (SPEC 10), on real files."""

from __future__ import annotations

import os
from pathlib import Path

from gateway.repository.layout import scan_repository
from tests import onnx_models


def test_links_out_are_refused_and_links_in_are_followed(tmp_path: Path) -> None:
    root, outside = tmp_path / "repo", tmp_path / "outside"
    onnx_models.write_model(outside, "far", 1, onnx_models.fixed_shape())
    onnx_models.write_model(root, "m", 1, onnx_models.fixed_shape())
    os.symlink(outside / "far", root / "away")
    os.symlink(outside / "far" / "1", root / "m" / "2")
    os.symlink(root / "m" / "1", root / "m" / "3")  # inside: fine
    os.symlink(root / "m", root / "alias")
    scan = scan_repository(root)
    assert scan.models["away"].problem is not None
    assert "outside the model repository" in scan.models["away"].problem
    assert scan.models["away"].versions == {}  # not even listed
    m = scan.models["m"]
    assert sorted(m.versions) == [1, 3] and sorted(m.refused) == [2]
    assert m.numbers == [1, 2, 3]
    assert sorted(scan.models["alias"].versions) == [1, 3]


def test_a_symlink_loop_is_refused_not_fatal(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    onnx_models.write_model(root, "m", 1, onnx_models.fixed_shape())
    os.symlink(root / "m" / "loop", root / "m" / "loop")
    (root / "m" / "2").mkdir()
    os.symlink(root / "m" / "2" / "model.onnx", root / "m" / "2" / "model.onnx")
    scan = scan_repository(root)
    assert sorted(scan.models["m"].versions) == [1]
    assert "cannot be resolved" in scan.models["m"].refused[2]


def test_a_model_toml_linked_out_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    onnx_models.write_model(root, "m", 1, onnx_models.fixed_shape())
    (tmp_path / "elsewhere.toml").write_text('[model]\nversions = "all"\n')
    os.symlink(tmp_path / "elsewhere.toml", root / "m" / "model.toml")
    problem = scan_repository(root).models["m"].config_problem
    assert problem is not None and "outside the model repository" in problem
