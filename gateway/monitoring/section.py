"""``[monitoring]`` of ``model.toml``: the sliding window drift is measured over."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from gateway.validation import Section


class MonitoringSection(Section):
    """``enabled``: bin traffic against the version's profile.json, if it has one.
    ``window_s``: how far back the figures look. ``min_rows``: fewer rows than this
    in the window and no PSI is reported (too few to judge)."""

    enabled: bool = True
    window_s: Annotated[float, Field(gt=0, le=86400)] = 300.0
    min_rows: Annotated[int, Field(ge=1)] = 500
