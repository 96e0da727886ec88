"""The drift gauges of /metrics (SPEC 12), worked out from the drift windows when
scraped rather than kept as prometheus_client gauges: the windows already cover every
worker, which multiprocess gauges would count again."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client.core import GaugeMetricFamily, Metric

# (model, version, rows in the window, PSI by column, the largest PSI): one per
# monitored serving version
DriftRow = tuple[str, str, int, Mapping[str, float], float]
DriftSource = Callable[[], Iterable[DriftRow]]


class DriftCollector:
    """gateway_drift_psi{model,version,column}, gateway_drift_score{model,version} and
    gateway_drift_window_rows{model,version}, read from the windows when scraped."""

    def __init__(self, source: DriftSource) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        psi = GaugeMetricFamily(
            "gateway_drift_psi",
            "PSI of a column's distribution in the window against the version's profile",
            labels=["model", "version", "column"],
        )
        score = GaugeMetricFamily(
            "gateway_drift_score",
            "The largest column PSI of the version (0 until the window has min_rows rows)",
            labels=["model", "version"],
        )
        rows = GaugeMetricFamily(
            "gateway_drift_window_rows",
            "Rows in the version's drift window, over every worker",
            labels=["model", "version"],
        )
        for model, version, window_rows, by_column, largest in self._source():
            for column, value in by_column.items():
                psi.add_metric([model, version, column], value)
            score.add_metric([model, version], largest)
            rows.add_metric([model, version], window_rows)
        yield from (psi, score, rows)
