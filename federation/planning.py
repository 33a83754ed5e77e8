"""From deployments to scheduler requests, and dry runs over the live inventory.

Pure: shared by the reconcile loop (real placements), ``edgefed apply`` (the
refusal when a replica fits nowhere) and ``edgefed plan``, so all three use
the same scheduler path and the same explanations.
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from federation.inventory import Node, NodeState
from federation.model import SlotKey, SlotRecord, template_of
from federation.scheduler import (
    STAY_FILTERS,
    Apart,
    Decision,
    Fleet,
    Near,
    Preference,
    Request,
    Round,
    RttSource,
    Scope,
    Share,
    Spread,
    Usage,
    Users,
    make_room,
    may_stay,
    moved_note,
    place,
    refusals,
)
from policies.model import (
    Container,
    Deployment,
    Failover,
    Placement,
    PlacementPolicy,
    Security,
    UserGroup,
)


def request_for(spec: Deployment, slot: int, generation: int, *,
                current_node: str | None = None) -> Request:
    return Request(deployment=spec.name, slot=slot, generation=generation,
                   current_node=current_node, **_spec_parts(spec))


# What a request takes from its deployment's spec, per spec object (specs are
# frozen). The requests of one deployment then share their rules' objects, so the
# scheduler's per-deployment caches recognise them by identity, without comparing
# them field by field.
_SPEC_PARTS: dict[int, tuple[Deployment, dict[str, Any]]] = {}
_SPEC_PARTS_KEPT = 4096


def _spec_parts(spec: Deployment) -> dict[str, Any]:
    cached = _SPEC_PARTS.get(id(spec))
    if cached is not None and cached[0] is spec:
        return cached[1]
    c, p = spec.container, spec.placement
    parts: dict[str, Any] = dict(
        labels=spec.labels,
        cpu_millis=c.resources.cpu_millis, memory_bytes=c.resources.memory_bytes,
        disk_bytes=c.resources.disk_bytes,
        devices={kind: n for kind, n in c.resources.devices.items() if n > 0},
        host_ports=tuple(port.host_port for port in c.ports if port.host_port),
        has_command=bool(c.command), image=c.image,
        node_selector=p.node_selector, site_selector=p.site_selector,
        countries=p.residency.countries, regions=p.residency.regions,
        tolerations=p.tolerations,
        users=tuple(_users(u) for u in p.users),
        data_sets=tuple(d.name for d in c.data_sets),
        max_per_node=p.max_per_node, max_per_site=p.max_per_site,
        apart=tuple(Apart(selector=t.selector, scope=Scope(t.scope.value))
                    for t in p.anti_affinity if t.required),
        near=tuple(Near(selector=t.selector, scope=Scope(t.scope.value))
                   for t in p.affinity if t.required),
        preferences=tuple(
            Preference(selector=t.selector, scope=Scope(t.scope.value), weight=t.weight,
                       apart=apart)
            for terms, apart in ((p.affinity, False), (p.anti_affinity, True))
            for t in terms if not t.required),
        spread=tuple(Spread(scope=Scope(s.scope.value), max_skew=s.max_skew, required=s.required)
                     for s in p.spread),
        split=tuple(Share(sites=g.sites, weight=g.weight) for g in p.split if g.weight > 0),
        replicas=spec.replicas,
        strategy=p.strategy,
        weights=p.weights,
    )
    if len(_SPEC_PARTS) >= _SPEC_PARTS_KEPT:
        _SPEC_PARTS.clear()
    _SPEC_PARTS[id(spec)] = (spec, parts)
    return parts


def _users(group: UserGroup) -> Users:
    """Users at a site or near a landmark; the RTT source knows both by name."""
    bound = group.max_rtt.total_seconds() * 1000 if group.max_rtt is not None else None
    return Users(name=group.name, source=group.site or group.landmark or group.name,
                 share=group.share, max_rtt_ms=bound)


# Seconds the exact solver may spend on one deployment's batch in a reconcile pass;
# the pass waits for it, so it stays well under a heartbeat interval.
OPTIMAL_TIME_LIMIT = 0.5

_T = TypeVar("_T")

# Seconds of exact solving one reconcile pass may spend over all its batches
# (``SolverTime``; ``edgefed controller --solver-seconds``).
OPTIMAL_PASS_SECONDS = 1.0


@dataclass(slots=True)
class SolverTime:
    """The exact solver's time in one reconcile pass: ``seconds`` over all its
    batches, measured on ``clock``. The pass runs on the controller's event loop,
    which reads no message while it waits, so a batch starts only if it can run to
    its time limit within them; the pass's first always starts, so that every pass
    makes progress."""

    seconds: float
    clock: Callable[[], float]
    spent: float = 0.0
    batches: int = 0

    def may_start(self) -> bool:
        return not self.batches or self.spent + OPTIMAL_TIME_LIMIT <= self.seconds

    def timed(self, solve: Callable[[], _T]) -> _T:
        """``solve()``, counted as one batch and its seconds."""
        started = self.clock()
        try:
            return solve()
        finally:
            self.spent += self.clock() - started
            self.batches += 1


@dataclass(frozen=True, slots=True)
class Decided:
    """A scheduler decision and, for a batch-solved replica, how the batch was
    decided (``optimal (gap 0.0%)``); its message leads with that note."""

    decision: Decision
    note: str = ""

    @property
    def message(self) -> str:
        message = self.decision.explanation.message
        return f"{self.note}; {message}" if self.note else message


def decide(requests: Sequence[Request], rnd: Round, *,
           solver_time: SolverTime | None = None) -> list[Decided | None]:
    """Place ``requests`` in order, reserving each in ``rnd``. The replicas of a
    deployment with ``strategy: optimal`` are solved together, as one batch at the
    position of the first of them; every other replica is placed on its own. A
    two-phase replica that fits nowhere may have room made for it by moving
    replicas placed one at a time earlier in the pass (``scheduling.repair``); a
    deployment for which that fails once is not tried again in the pass.

    With ``solver_time``, the replicas of a batch that may not start in the time
    left are None: left for a later pass, nothing reserved. Without, every batch
    is solved (dry runs)."""
    batches: dict[str, list[int]] = {}
    for i, req in enumerate(requests):
        if req.strategy == "optimal" and _optimal_available():
            batches.setdefault(req.deployment, []).append(i)
    out: dict[int, Decided | None] = {}
    movable: list[int] = []  # placed one at a time in this pass
    cornered: set[str] = set()
    for i, req in enumerate(requests):
        if i in out:
            continue
        batch = batches.get(req.deployment) if req.strategy == "optimal" else None
        if batch:
            out.update(zip(batch, _solve([requests[j] for j in batch], rnd, solver_time),
                           strict=True))
            continue
        decided = Decided(place(req, rnd))
        if decided.decision.node is None and req.strategy == "two-phase" and \
                req.deployment not in cornered:
            placed = [(j, d.decision) for j in movable if (d := out[j]) is not None]
            room = make_room(req, placed, rnd)
            if room is None:
                cornered.add(req.deployment)
            else:
                decided = Decided(room.decision, room.note)
                out.update((m.position, Decided(m.decision, moved_note(m, req)))
                           for m in room.moved)
        out[i] = decided
        if decided.decision.node is not None:
            movable.append(i)
    return [out[i] for i in range(len(requests))]


def _solve(batch: list[Request], rnd: Round,
           solver_time: SolverTime | None) -> list[Decided | None]:
    """One optimal batch solved, or None for each replica if it may not start."""
    if solver_time is not None and not solver_time.may_start():
        return [None] * len(batch)
    from federation.optimal import place_optimal  # scipy: imported only when asked

    def solve() -> list[Decided | None]:
        placed = place_optimal(batch, rnd, time_limit=OPTIMAL_TIME_LIMIT)
        return [Decided(p.decision, p.note) for p in placed]

    return solve() if solver_time is None else solver_time.timed(solve)


def _optimal_available() -> bool:
    """Whether the batch solver for ``strategy: optimal`` is installed."""
    return importlib.util.find_spec("federation.optimal") is not None


# -- what the scheduler and the runtime honour --------------------------------------

# Fields of a deployment that are enforced as written (the rest are in unenforced()):
ENFORCED = (
    "spec.replicas", "spec.restartPolicy",
    "spec.container.image, command, args, env, ports (host ports are a filter; the image "
    "is scored by image-locality)",
    "spec.container.resources.cpu, memory (the resources filter; the runtime limits to them)",
    "spec.container.resources.disk (the resources filter reserves it; the runtime does not "
    "limit disk)",
    "spec.container.resources.devices (the devices filter)",
    "spec.container.dataSets (scored by data-locality; the runtime does not mount them)",
    "spec.placement.nodeSelector (platform and node-selector filters)",
    "spec.placement.siteSelector", "spec.placement.residency", "spec.placement.maxPerNode",
    "spec.placement.maxPerSite", "spec.placement.weights",
    "spec.placement.strategy (two-phase, random, round-robin, least-load; optimal where "
    "the batch solver is installed)",
    "spec.placement.affinity and antiAffinity: required terms filter, preferred terms are "
    "scored (affinity), at scope node, site, region or provider",
    "spec.placement.spread: required constraints filter by maxSkew, preferred ones are "
    "scored (topology-spread)",
    "spec.placement.split: each replica goes to the site group furthest below its weight "
    "(the split filter)",
    "spec.placement.users: maxRtt filters (latency), shares weight the user-rtt score",
    "spec.placement.tolerations (against node and site taints: NoSchedule and NoExecute "
    "filter, PreferNoSchedule scores down)",
    "spec.failover.grace, disconnectTolerance (replacement after that long out of contact)",
    "spec.failover.onReconnect: keep-replacement and keep-original",
    "spec.failover.singleton (self-fencing agent, or edgefed confirm-lost)",
    "spec.rollout (parallelism, delay, healthGated, failureAction, maxSurge, maxUnavailable, "
    "progressDeadline; "
    "see docs/rollouts.md)",
)


def unenforced(spec: Deployment) -> list[str]:
    """A warning for every field ``spec`` sets that nothing enforces yet, naming the
    field: applying or planning such a deployment says so instead of ignoring it
    silently. Together with :data:`ENFORCED` this is the whole model."""
    out = _placement_warnings(spec.placement) + _container_warnings(spec.container)
    return out + _failover_warnings(spec.failover)


def unenforced_policy(policy: PlacementPolicy) -> list[str]:
    """:func:`unenforced` for the fields a placement policy sets."""
    return _placement_warnings(policy.placement) + _failover_warnings(policy.failover)


def _placement_warnings(p: Placement) -> list[str]:
    out = []
    if p.strategy == "optimal" and not _optimal_available():
        out.append("spec.placement.strategy: optimal is not available in this controller; "
                   "the deployment is placed with two-phase")
    return out


def _container_warnings(c: Container) -> list[str]:
    out = []
    if c.resources.devices:
        out.append("spec.container.resources.devices: replicas go only to nodes that report "
                   "enough devices (agents find NVIDIA GPUs in /dev, or are told with "
                   "--device); the runtime does not pass devices to the container yet")
    if c.data_sets:
        out.append("spec.container.dataSets: nodes that hold the data sets are preferred; "
                   "the runtime does not mount data sets yet")
    if c.volumes:
        out.append("spec.container.volumes: host path volumes are not mounted yet; the runtime "
                   "ignores them")
    if c.health_check is not None:
        out.append("spec.container.healthCheck: health checks are not run yet; the agent "
                   "ignores it")
    if c.security != Security():
        out.append("spec.container.security: security settings are not applied yet; the "
                   "runtime ignores them")
    return out


def _failover_warnings(f: Failover) -> list[str]:
    """Every failover field is enforced (federation.failover, docs/failover.md)."""
    del f
    return []


def new_round(nodes: Iterable[Node], slots: Iterable[SlotRecord],
              specs: Mapping[str, Deployment], *, exclude: str | None = None,
              rtt: RttSource | None = None, fleet: Fleet | None = None) -> Round:
    """A scheduling round where every placed slot (except ``exclude``'s) holds its share;
    ``rtt`` gives round-trip times from user locations (None: all unknown); ``fleet``,
    the columns kept from the last round (None: every node is read)."""
    committed: dict[str, Usage] = {}
    placed: dict[str, Counter[str]] = {}
    shares: dict[str, Request] = {}  # what one replica holds: the same for every slot
    for slot in slots:
        spec = specs.get(slot.deployment)
        if slot.node is None or spec is None or slot.deployment == exclude:
            continue
        req = shares.get(slot.deployment)
        if req is None:
            req = shares[slot.deployment] = request_for(spec, slot.index, slot.generation)
        committed[slot.node] = committed.get(slot.node, Usage()).plus(req)
        counted = placed.get(slot.deployment)
        if counted is None:
            counted = placed[slot.deployment] = Counter()
        counted[slot.node] += 1
    labels = {name: spec.labels for name, spec in specs.items() if name != exclude}
    apart = {name: terms for name, spec in specs.items()
             if name != exclude and (terms := request_for(spec, 0, 0).apart)}
    return Round(nodes=list(nodes), committed=committed, placed=placed, deployment_labels=labels,
                 deployment_apart=apart, rtt=rtt, fleet=fleet)


def misplaced(specs: Mapping[str, Deployment], slots: Iterable[SlotRecord],
              nodes: Iterable[Node], *, fleet: Fleet | None = None) -> dict[SlotKey, str]:
    """Placed replicas on Ready nodes that may no longer stay there, with the reason:
    the scheduler's ``STAY_FILTERS`` refuse their node under the current placement.
    Slots are taken in order, so when a limit is lowered the highest slots move."""
    rnd = Round(nodes=list(nodes), fleet=fleet)
    out: dict[SlotKey, str] = {}
    asked: dict[str, Request] = {}
    for slot in sorted(slots, key=lambda s: s.key):
        spec = specs.get(slot.deployment)
        node = rnd.by_name.get(slot.node) if slot.node else None
        if (spec is None or node is None or node.state is not NodeState.READY
                or slot.index >= spec.replicas):
            continue
        if slot.deployment not in asked:  # the rules read the spec, not the slot
            asked[slot.deployment] = request_for(spec, slot.index, slot.generation)
        req = asked[slot.deployment]
        if may_stay(req, rnd, rnd.index[node.name]):
            if req.max_per_node > 0 or req.max_per_site > 0:  # only the limits count replicas
                rnd.count(req, node.name)
            continue
        refused = refusals(req, node, rnd, STAY_FILTERS)  # the reasons, in chain order
        out[slot.key] = f"node {node.name} no longer fits: " + ", ".join(r.reason for r in refused)
    return out


class Change(StrEnum):
    """What a dry run says would happen to one replica."""

    STAYS = "stays"  # keeps running where it runs
    NEW = "new"  # not placed yet; placed on a node
    MOVES = "moves"  # runs on one node now, would run on another
    REPLACED = "replaced"  # a new template on the node it runs on
    UNSCHEDULABLE = "unschedulable"  # would fit on no node


@dataclass(frozen=True, slots=True, kw_only=True)
class PlannedSlot:
    slot: int
    node: str | None
    site: str | None
    message: str
    change: Change
    from_node: str | None = None  # where it runs now, when it is placed anew
    reason: str = ""  # why a replica that runs somewhere is placed anew

    @property
    def moves(self) -> bool:
        """Placed anew, rather than staying where it runs."""
        return self.change is not Change.STAYS


def dry_run(spec: Deployment, nodes: Sequence[Node], slots: Mapping[SlotKey, SlotRecord],
            specs: Mapping[str, Deployment], *, rtt: RttSource | None = None,
            fleet: Fleet | None = None) -> list[PlannedSlot]:
    """Where each replica of ``spec`` would run if applied now, decided as the
    controller's next pass would: a replica stays unless its node is gone or Lost,
    its template changed (then it prefers its node) or it may no longer stay."""
    rnd = new_round(nodes, slots.values(), specs, exclude=spec.name, rtt=rtt, fleet=fleet)
    template = template_of(spec)
    by_name = {n.name: n for n in nodes}
    mine = [s for i in range(spec.replicas) if (s := slots.get((spec.name, i))) is not None]
    must_move = misplaced({spec.name: spec}, mine, nodes, fleet=fleet)
    keep = []
    for current in mine:
        node = by_name.get(current.node) if current.node else None
        if (node is not None and node.state is not NodeState.LOST
                and current.template == template and current.key not in must_move):
            rnd.reserve(request_for(spec, current.index, current.generation), node.name)
            keep.append(PlannedSlot(slot=current.index, node=node.name, site=node.site,
                                    change=Change.STAYS, message=f"stays on {node.name}"))
    kept = {p.slot for p in keep}
    moving = [(index, slots.get((spec.name, index))) for index in range(spec.replicas)
              if index not in kept]
    why = [_why_placed(current, by_name, must_move) for _, current in moving]
    requests = [request_for(spec, index, (current.generation if current else 0) + 1,
                            current_node=prefer)
                for (index, current), (_, prefer) in zip(moving, why, strict=True)]
    out = [_planned(index, current, reason, decided)
           for (index, current), (reason, _), decided
           in zip(moving, why, decide(requests, rnd), strict=True)]  # no budget: all decided
    return sorted(keep + out, key=lambda p: p.slot)


def _why_placed(current: SlotRecord | None, nodes: Mapping[str, Node],
                must_move: Mapping[SlotKey, str]) -> tuple[str, str | None]:
    """Why a replica of a dry run is placed anew, and the node it should prefer."""
    here = current.node if current is not None else None
    if current is None or here is None:
        return "", None
    node = nodes.get(here)
    if current.key in must_move:
        return must_move[current.key], None
    if node is None or node.state is NodeState.LOST:
        return (f"node {here} is lost" if node else f"node {here} is gone"), None
    return "template changed", here if node.state is NodeState.READY else None


def _planned(index: int, current: SlotRecord | None, reason: str,
             decided: Decided | None) -> PlannedSlot:
    """One replica of a dry run: where it goes and what changes for it."""
    assert decided is not None  # a dry run decides with no budget for the solver
    here = current.node if current is not None else None
    decision = decided.decision
    if decision.node is None:
        change = Change.UNSCHEDULABLE
    elif here is None:
        change = Change.NEW
    else:
        change = Change.REPLACED if decision.node == here else Change.MOVES
    return PlannedSlot(slot=index, node=decision.node, site=decision.site, change=change,
                       from_node=here, reason=reason, message=decided.message)
