"""model.toml validation and the version policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.repository.spec import (
    ModelConfig,
    VersionPolicy,
    load_model_config,
    parse_model_config,
)


def test_missing_file_means_defaults(tmp_path: Path) -> None:
    config = load_model_config(tmp_path / "model.toml")
    assert config == ModelConfig()
    assert config.model.versions == "latest"
    assert config.batching.max_batch_size == 32
    assert config.batching.max_queue_delay_ms == 2.0
    assert config.batching.max_queue_size == 1024
    assert config.batching.timeout_ms == 0
    assert config.runtime.instances == 1
    assert config.runtime.providers is None


def test_full_config_parses(tmp_path: Path) -> None:
    path = tmp_path / "model.toml"
    path.write_text(
        """
[model]
versions = [3, 1]
[runtime]
providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
intra_op_threads = 2
inter_op_threads = 1
graph_optimization_level = "basic"
instances = 2
[batching]
max_batch_size = 16
max_queue_delay_ms = 1
preferred_batch_sizes = [4, 8]
max_queue_size = 10
timeout_ms = 250
"""
    )
    config = load_model_config(path)
    assert config.model.versions == [1, 3]
    assert config.runtime.instances == 2
    assert config.batching.max_queue_delay_ms == 1.0
    assert config.batching.preferred_batch_sizes == [4, 8]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[batching]\nmax_batch_size = "big"\n',
            '[batching] max_batch_size: expected an integer, got "big"',
        ),
        ("[batching]\nmax_batch_sise = 4\n", "unknown key [batching] max_batch_sise"),
        ("[routes]\nx = 1\n", "unknown key [routes]"),
        ("[runtime]\ninstances = true\n", "[runtime] instances: expected an integer, got true"),
        ("[runtime]\ninstances = 0\n", "[runtime] instances: input should be greater than"),
        ('[runtime]\nproviders = "CPU"\n', "[runtime] providers: expected a list"),
        (
            '[batching]\nmax_queue_delay_ms = "2"\n',
            '[batching] max_queue_delay_ms: expected a number, got "2"',
        ),
        ('[model]\nversions = "newest"\n', 'expected "latest", "latest:N"'),
        ("[model]\nversions = []\n", "non-empty list of positive version numbers"),
        ("[model]\nversions = [0]\n", "got [0]"),
        ('[model]\nversions = "latest:0"\n', 'got "latest:0"'),
        ("model = 3\n", "[model]: expected a table, got 3"),
        (
            "[batching]\nmax_batch_size = 4\npreferred_batch_sizes = [8]\n",
            "preferred_batch_sizes [8] exceed max_batch_size 4",
        ),
        ('[runtime]\ngraph_optimization_level = "max"\n', "graph_optimization_level"),
        ("[batching\n", "not valid TOML"),
    ],
)
def test_errors_name_file_key_and_expectation(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "model.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_model_config(path)
    assert str(caught.value).startswith(str(path))
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("versions", "available", "selected", "missing"),
    [
        ("latest", [1, 2, 3], [3], []),
        ("latest:2", [1, 2, 3], [2, 3], []),
        ("latest:5", [1, 2, 3], [1, 2, 3], []),
        ("all", [3, 1], [1, 3], []),
        ([1, 4], [1, 2, 3], [1], [4]),
        ("latest", [], [], []),
    ],
)
def test_version_policy(
    versions: object, available: list[int], selected: list[int], missing: list[int]
) -> None:
    policy = VersionPolicy.of(parse_model_config({"model": {"versions": versions}}))
    assert policy.select(available) == selected
    assert policy.missing(available) == missing
