"""Semantic checks: documents that are well formed but cannot mean what they say.

These run on the model, after the structure is valid, so they apply as well to
a deployment with its placement policies merged in
(:func:`policies.merge.effective_deployment`) as to one read from a file.
Problems carry the field path of the native document.

What is checked, each an error unless it says warning:

- a selector that no labels can satisfy (``arch=amd64`` with ``arch NotIn
  (amd64)``, ``gpu Exists`` with ``gpu DoesNotExist``, ``ram Gt 8`` with ``ram
  Lt 4``);
- residency that no node or site the selectors allow can meet;
- split weights that do not add up to 100; a split group of weight 0 (warning);
- users' shares that do not add up to 1; a user group named twice;
- tolerations: ``Exists`` with a value; an empty key with ``Equal``;
- volumes and data sets: a name or mount path used twice;
- a singleton with more than one replica, or allowed to surge in a rollout;
- a rollout with ``maxSurge`` and ``maxUnavailable`` both 0;
- ``healthGated`` without a health check (warning);
- a placement policy that sets nothing (warning).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

from policies.errors import FieldPath, Problem, Problems, format_path
from policies.spec import (
    COUNTRY_LABEL,
    REGION_LABEL,
    Container,
    Deployment,
    LabelRequirement,
    Operator,
    Placement,
    PlacementPolicy,
    Selector,
    TolerationOperator,
)

_SPEC: FieldPath = ("spec",)
_PLACEMENT: FieldPath = ("spec", "placement")


def deployment_problems(deployment: Deployment) -> list[Problem]:
    found = Problems()
    _placement(found, deployment.placement)
    _container(found, deployment.container, (*_SPEC, "container"))
    rollout, failover = deployment.rollout, deployment.failover
    if failover.singleton and deployment.replicas > 1:
        found.error((*_SPEC, "replicas"), f"found {deployment.replicas}, expected 1: a "
                    "singleton has exactly one replica")
    if failover.singleton and rollout.max_surge > 0:
        found.error((*_SPEC, "rollout", "maxSurge"), f"found {rollout.max_surge}, expected 0: "
                    "a singleton never runs two instances, not even during a rollout")
    if rollout.max_surge == 0 and rollout.max_unavailable == 0:
        found.error((*_SPEC, "rollout", "maxUnavailable"), "found 0 with maxSurge 0, expected "
                    "at least 1: a rollout could never replace an instance")
    if rollout.health_gated and deployment.container.health_check is None:
        found.warn((*_SPEC, "rollout", "healthGated"), "there is no health check to wait for "
                   "(expected spec.container.healthCheck); batches wait only for their "
                   "instances to start")
    return found.items


def policy_problems(policy: PlacementPolicy) -> list[Problem]:
    found = Problems()
    _selector(found, policy.selector, (*_SPEC, "selector"))
    _placement(found, policy.placement)
    if not policy.placement.set_fields and not policy.failover.set_fields:
        found.warn(_SPEC, "sets no placement or failover field, so it changes nothing")
    return found.items


# -- placement -------------------------------------------------------------------


def _placement(found: Problems, placement: Placement) -> None:
    for path, selector in _selectors(placement):
        _selector(found, selector, path)
    _residency(found, placement)
    if placement.split:
        total = sum(group.weight for group in placement.split)
        if total != 100:
            found.error((*_PLACEMENT, "split"), f"weights add up to {total}, expected 100")
        for i, group in enumerate(placement.split):
            if group.weight == 0:
                found.warn((*_PLACEMENT, "split", i, "weight"),
                           "is 0: this group gets no replicas")
    if placement.users:
        share = math.fsum(user.share for user in placement.users)
        if not math.isclose(share, 1.0, abs_tol=1e-9):
            found.error((*_PLACEMENT, "users"), f"shares add up to {share:g}, expected 1")
        _unique(found, [(user.name, (*_PLACEMENT, "users", i, "name"))
                        for i, user in enumerate(placement.users)], "name")
    for i, toleration in enumerate(placement.tolerations):
        path = (*_PLACEMENT, "tolerations", i)
        if toleration.operator is TolerationOperator.EXISTS and toleration.value:
            found.error((*path, "value"), f"found {toleration.value!r}, expected no value "
                        "with operator Exists")
        if toleration.operator is TolerationOperator.EQUAL and not toleration.key:
            found.error((*path, "key"), "found an empty key with operator Equal, expected a "
                        "key (or operator Exists, to tolerate every taint)")


def _selectors(placement: Placement) -> Iterator[tuple[FieldPath, Selector]]:
    yield (*_PLACEMENT, "nodeSelector"), placement.node_selector
    yield (*_PLACEMENT, "siteSelector"), placement.site_selector
    for name, terms in (("affinity", placement.affinity),
                        ("antiAffinity", placement.anti_affinity)):
        for i, term in enumerate(terms):
            yield (*_PLACEMENT, name, i, "selector"), term.selector
    for i, group in enumerate(placement.split):
        yield (*_PLACEMENT, "split", i, "sites"), group.sites


def _selector(found: Problems, selector: Selector, path: FieldPath) -> None:
    for key, parts in _requirements_by_key(selector).items():
        if _satisfiable(key, selector):
            continue
        if len(parts) == 1:
            found.error(path, f"can never match: no value of {key!r} satisfies {parts[0]}")
        else:
            found.error(path, f"can never match: {' and '.join(parts)} exclude each other")


def _requirements_by_key(selector: Selector) -> dict[str, list[str]]:
    parts: dict[str, list[str]] = {}
    for key, value in selector.match_labels.items():
        parts.setdefault(key, []).append(f"{key}={value}")
    for requirement in selector.match_expressions:
        parts.setdefault(requirement.key, []).append(requirement.describe())
    return parts


def _on(selector: Selector, key: str) -> list[LabelRequirement]:
    return [r for r in selector.match_expressions if r.key == key]


def _allows(selector: Selector, key: str, value: str) -> bool:
    """Whether a label ``key=value`` meets every requirement on ``key``."""
    if selector.match_labels.get(key, value) != value:
        return False
    return all(r.matches({key: value}) for r in _on(selector, key))


def _satisfiable(key: str, selector: Selector) -> bool:
    requirements = _on(selector, key)
    if any(r.operator is Operator.DOES_NOT_EXIST for r in requirements):
        # Absence meets NotIn too, but nothing that needs the label.
        return key not in selector.match_labels and all(
            r.operator in (Operator.DOES_NOT_EXIST, Operator.NOT_IN) for r in requirements)
    finite: set[str] | None = None
    if key in selector.match_labels:
        finite = {selector.match_labels[key]}
    for r in requirements:
        if r.operator is Operator.IN:
            finite = set(r.values) if finite is None else finite & set(r.values)
    if finite is not None:
        return any(_allows(selector, key, value) for value in finite)
    # Only Exists, NotIn, Gt and Lt: NotIn excludes finitely many numbers, so
    # only the bounds can leave no value at all.
    low = max((_bound(r) for r in requirements if r.operator is Operator.GT), default=-math.inf)
    high = min((_bound(r) for r in requirements if r.operator is Operator.LT), default=math.inf)
    return not (math.isnan(low) or math.isnan(high)) and low < high \
        and low != math.inf and high != -math.inf


def _bound(requirement: LabelRequirement) -> float:
    try:
        return float(requirement.values[0])
    except (ValueError, IndexError):
        return math.nan  # the reader refuses these; nothing matches them either


def _residency(found: Problems, placement: Placement) -> None:
    rules = ((COUNTRY_LABEL, "countries", placement.residency.countries),
             (REGION_LABEL, "regions", placement.residency.regions))
    for label, field_name, allowed in rules:
        if not allowed:
            continue
        for path, selector in _selectors(placement):
            if path[len(_PLACEMENT)] not in ("nodeSelector", "siteSelector", "split"):
                continue  # affinity selectors select deployments, not places
            parts = _requirements_by_key(selector).get(label)
            if parts and not any(_allows(selector, label, value) for value in allowed):
                found.error((*_PLACEMENT, "residency", field_name),
                            f"allows only {', '.join(allowed)}, but {_short(path)} requires "
                            f"{' and '.join(parts)}: nothing can be placed")


def _short(path: FieldPath) -> str:
    return format_path(path[len(_PLACEMENT):])


# -- container -------------------------------------------------------------------


def _container(found: Problems, container: Container, path: FieldPath) -> None:
    _unique(found, [(v.name, (*path, "volumes", i, "name"))
                    for i, v in enumerate(container.volumes)], "name")
    _unique(found, [(d.name, (*path, "dataSets", i, "name"))
                    for i, d in enumerate(container.data_sets)], "name")
    mounts = [(v.mount_path, (*path, "volumes", i, "mountPath"))
              for i, v in enumerate(container.volumes)]
    mounts += [(d.mount_path, (*path, "dataSets", i, "mountPath"))
               for i, d in enumerate(container.data_sets)]
    _unique(found, mounts, "mount path")


def _unique(found: Problems, named: Sequence[tuple[str, FieldPath]], what: str) -> None:
    seen: dict[str, FieldPath] = {}
    for value, path in named:
        if value in seen:
            found.error(path, f"duplicate {what} {value!r} (first given at "
                        f"{format_path(seen[value])})")
        else:
            seen[value] = path
