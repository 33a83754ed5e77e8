"""Two-phase placement on arrays: filter plugins remove nodes that cannot run a
replica (each with a reason), score plugins rank the rest, the best wins.

    request ─▶ filters  (boolean mask per plugin over every node; reasons kept)
            ─▶ scores   (float vector per plugin, 0..100, weighted by the policy)
            ─▶ select   (highest total; ties by a hash seeded per decision)
            ─▶ Decision (node, explanation read off the same arrays)

A :class:`Round` holds the inventory as columns and what earlier placements in
the same reconcile pass reserved, so a batch of replicas is spread and packed
correctly. See ``docs/scheduling.md`` for the plugins, reasons and weights.
"""

from __future__ import annotations

from federation.scheduling.columns import Round
from federation.scheduling.filters import (
    FILTERS,
    STAY_FILTERS,
    FilterPlugin,
    describe_selector,
    evaluate,
    may_stay,
    refusals,
)
from federation.scheduling.fleet import Fleet
from federation.scheduling.place import STRATEGIES, feasible, place, tie_keys
from federation.scheduling.refusal import Refusal
from federation.scheduling.repair import Room, make_room, moved_note
from federation.scheduling.request import (
    Apart,
    Decision,
    Explanation,
    Near,
    Preference,
    Ranked,
    Rejection,
    Request,
    RttSource,
    Scope,
    Share,
    Spread,
    Usage,
    Users,
)
from federation.scheduling.scores import DEFAULT_WEIGHTS, SCORES, ScorePlugin

__all__ = [
    "DEFAULT_WEIGHTS",
    "FILTERS",
    "SCORES",
    "STAY_FILTERS",
    "STRATEGIES",
    "Apart",
    "Decision",
    "Explanation",
    "FilterPlugin",
    "Fleet",
    "Near",
    "Preference",
    "Ranked",
    "Refusal",
    "Rejection",
    "Request",
    "Room",
    "Round",
    "RttSource",
    "Scope",
    "ScorePlugin",
    "Share",
    "Spread",
    "Usage",
    "Users",
    "describe_selector",
    "evaluate",
    "feasible",
    "make_room",
    "may_stay",
    "moved_note",
    "place",
    "refusals",
    "tie_keys",
]
