"""The Grafana dashboard in deploy/: every query names metrics the gateway exports,
with labels those metrics have, and the panels the operators' guide describes exist."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import yaml

from gateway.drift_metrics import DriftCollector
from gateway.metrics import Metrics
from gateway.rollout_metrics import RolloutMetrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "gateway-dashboard.json"
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}


def _exported() -> dict[str, set[str]]:
    """Every series name the gateway exports, with its label names."""
    names: dict[str, set[str]] = {}
    metrics = Metrics()
    rollouts = RolloutMetrics(metrics.registry)  # the app registers them beside the rest
    for family in metrics.registry.collect():
        for suffix in SUFFIXES[family.type]:
            names[family.name + suffix] = set()
    # collect() gives no label names for a metric without children: read its definition
    for attribute in [*vars(metrics).values(), *vars(rollouts).values()]:
        labelnames = getattr(attribute, "_labelnames", None)
        name = getattr(attribute, "_name", None)
        if labelnames is None or name is None:
            continue
        for series in names:
            if series == name or series.startswith(name + "_"):
                names[series] |= set(labelnames) | ({"le"} if series.endswith("_bucket") else set())
    # the drift gauges are worked out when scraped (gateway.drift_metrics)
    sample = DriftCollector(lambda: [("m", "1", 1, {"c": 0.0}, 0.0)])
    for family in sample.collect():
        names[family.name] = set(family.samples[0].labels)
    return names


def _panels() -> list[dict[str, Any]]:  # JSON
    return [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]


def _queries() -> list[str]:
    return [str(t["expr"]) for p in _panels() for t in p["targets"]]


def test_every_query_names_exported_metrics_and_their_labels() -> None:
    exported = _exported()
    for query in _queries():
        assert query.count("(") == query.count(")"), query
        used = re.findall(r"\bgateway_[a-z_]+", query)
        assert used, query
        for name in used:
            assert name in exported, f"{name} is not exported (in {query})"
        labels = set()
        for group in re.findall(r"by \(([^)]*)\)", query):
            labels |= {label.strip() for label in group.split(",")}
        for selector in re.findall(r"\{([^}]*)\}", query):
            labels |= set(re.findall(r"([a-z_]+)\s*[!=]~?", selector))
        known = set().union(*(exported[name] for name in used))
        assert labels <= known, f"{labels - known} are not labels of {used}"


def test_the_panels_an_operator_needs() -> None:
    used = set(itertools.chain.from_iterable(re.findall(r"gateway_[a-z_]+", q) for q in _queries()))
    for name in (
        "gateway_requests_total",
        "gateway_request_duration_seconds_bucket",
        "gateway_batch_size_sum",
        "gateway_queue_depth",
        "gateway_shadow_disagreements_total",
        "gateway_feature_lookups_total",
        "gateway_model_info",
        "gateway_build_info",
        "gateway_rollout_canary_weight",
        "gateway_rollout_transitions_total",
    ):
        assert name in used, name
    titles = " ".join(str(p["title"]).lower() for p in _panels())
    for words in (
        "request rate",
        "p50 / p99",
        "batch size",
        "queue depth",
        "shadow",
        "source",
        "rollout",
    ):
        assert words in titles


def test_panels_do_not_overlap() -> None:
    taken: set[tuple[int, int]] = set()
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & taken, panel["title"]
        taken |= cells


RULES = DASHBOARD.parents[1] / "prometheus" / "drift-rules.yaml"


def test_drift_rules_name_exported_metrics_and_alert_at_the_documented_levels() -> None:
    exported = _exported()
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    recorded = {rule["record"] for rule in rules if "record" in rule}
    for rule in rules:
        for name in re.findall(r"\bgateway_[a-z_]+", rule["expr"]):
            assert name in exported, name
        for name in re.findall(r"\b[a-z_]+:[a-z_]+:[a-z]+\b", rule["expr"]):
            assert name in recorded, name
    alerts = {rule["alert"]: rule for rule in rules if "alert" in rule}
    assert "> 0.1" in alerts["GatewayInputDriftModerate"]["expr"]
    assert "> 0.25" in alerts["GatewayInputDrift"]["expr"]
    assert all(">= 500" in rule["expr"] for rule in alerts.values())  # only with rows
