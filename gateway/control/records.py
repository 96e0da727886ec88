"""What the control state holds: per model, its runtime changes and their generation.

A model without a record serves as its ``model.toml`` says (generation 0). Each
change sets some fields of the record and moves it to the next generation; a worker
applies the whole latest record, so one that was away is up to date at once,
whatever it missed.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

# a replica that has not shared on a board for this long has left it (ControlStore.share)
BOARD_STALE_S = 5.0


@dataclass(frozen=True, slots=True)
class ModelRecord:
    """``routing``: the routing that overrides model.toml's (its JSON form), or None
    for model.toml's own. ``loaded``: False while the model is unloaded."""

    generation: int = 0
    routing: Mapping[str, Any] | None = None
    loaded: bool = True
    change: str = ""  # the id of the change that made this generation (see new_change)
    rollout: Mapping[str, Any] | None = None  # the model's rollout, running or last one

    def fields(self) -> dict[str, str]:
        """The record without its generation, as strings (what the stores keep)."""
        fields = {**routing_field(self.routing), **loaded_field(self.loaded)}
        return {**fields, **rollout_field(self.rollout), "change": self.change}

    @classmethod
    def from_fields(cls, generation: int, fields: Mapping[str, str]) -> ModelRecord:
        routing = fields.get("routing") or ""
        return cls(
            generation=generation,
            routing=orjson.loads(routing) if routing else None,
            loaded=fields.get("loaded", "1") != "0",
            change=fields.get("change", ""),
            rollout=orjson.loads(fields["rollout"]) if fields.get("rollout") else None,
        )

    def to_json(self) -> dict[str, Any]:
        return {"generation": self.generation, "routing": self.routing, "loaded": self.loaded}


def new_change() -> str:
    """A fresh id for a change. Followers compare it, not only the generation: a control
    state that lost its data (a Redis restarted without persistence) counts generations
    from 1 again, and its generation 1 is not the generation 1 applied before."""
    return uuid.uuid4().hex


def routing_field(routing: Mapping[str, Any] | None) -> dict[str, str]:
    """A change of routing (None: model.toml's again), as ``ControlStore.write`` takes it."""
    return {"routing": "" if routing is None else orjson.dumps(routing).decode()}


def rollout_field(rollout: Mapping[str, Any] | None) -> dict[str, str]:
    """A rollout's new state, as ``ControlStore.write`` takes it."""
    return {"rollout": "" if rollout is None else orjson.dumps(rollout).decode()}


def loaded_field(loaded: bool) -> dict[str, str]:
    """A change to loaded (True) or unloaded (False), as ``ControlStore.write`` takes it."""
    return {"loaded": "1" if loaded else "0"}


@dataclass(frozen=True, slots=True)
class Applied:
    """What one worker (``member``: replica/pid) has applied: generation by model."""

    member: str
    generations: Mapping[str, int]
