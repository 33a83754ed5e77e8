"""Placement policies applied to a deployment: the placement the scheduler uses.

A policy binds to every deployment whose labels its selector matches (an empty
selector matches all). Fields are merged one at a time, each whole (a
selector, the weights, the split list): for each field of ``placement`` and
``failover``, the deployment's own value wins if the deployment set it;
otherwise the value of the bound policy with the highest priority that sets
it; otherwise the default. Equal priorities: the policy whose name sorts first
wins, so the outcome never depends on the order policies were given in.

"Set" means written in the document, even at the default value (see
``set_fields`` in :mod:`policies.spec`): a deployment that writes
``failover: {grace: 10s}`` keeps 10 s even when a policy says 30 s.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from policies.spec import Deployment, Failover, Placement, PlacementPolicy

_Layer = TypeVar("_Layer", Placement, Failover)


def bound_policies(deployment: Deployment,
                   policies: Iterable[PlacementPolicy]) -> list[PlacementPolicy]:
    """The policies whose selector matches the deployment's labels, strongest first."""
    return sorted((p for p in policies if p.selector.matches(deployment.labels)),
                  key=lambda p: (-p.priority, p.name))


def effective_deployment(deployment: Deployment, policies: Iterable[PlacementPolicy]
                         ) -> tuple[Deployment, list[str]]:
    """The deployment with its bound policies merged in, and the names of those
    policies, strongest first (a bound policy is named even when the
    deployment's own fields override all of it)."""
    bound = bound_policies(deployment, policies)
    if not bound:
        return deployment, []
    placement = _layered([deployment.placement, *(p.placement for p in bound)])
    failover = _layered([deployment.failover, *(p.failover for p in bound)])
    return (dataclasses.replace(deployment, placement=placement, failover=failover),
            [p.name for p in bound])


def _layered(layers: Sequence[_Layer]) -> _Layer:
    """Field by field, the value of the first layer that set it."""
    values: dict[str, Any] = {}
    for layer in layers:
        for name in layer.set_fields:
            values.setdefault(name, getattr(layer, name))
    return type(layers[0])(**values, set_fields=frozenset(values))
