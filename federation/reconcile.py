"""Decide what must exist: place, run, stop, forget. Never picks a node.

``reconcile(desired, observed, now)`` is a pure function; one async loop in
the controller calls it, hands ``Place`` actions to the scheduler and sends
the rest as commands.

Rules, in order, for every slot of every deployment:

* slot beyond ``replicas`` or deployment deleted -> Stop its instance, Forget it
* not placed, or its node unknown            -> Place (generation + 1)
* its node out of contact past the deployment's grace (``failover.verdict``: grace,
  disconnectTolerance, singleton fencing, operator confirmation)
                                             -> Place elsewhere (generation + 1, ``failover``)
* placed on a Ready node it may not stay on  -> Place elsewhere (generation + 1)
* placed on a Ready node, template changed   -> Place, preferring its node (generation + 1),
                                               unless the rollout paces it (``waiting``)
* placed, instance not at its generation     -> Run (again, once per resend period)

and for every live instance an agent reports: if no slot claims it at that
node and generation, Stop it (it was superseded or its slot is gone) -- except
the original of a slot replaced by failover whose deployment says
``onReconnect: keep-original``: it is not stopped, and once its node is Ready
it is kept (``Reclaim``: the slot runs there again at a new generation and the
replacement is superseded).

Whether a replica may stay on its node is the scheduler's question, not this
module's: the caller passes the answer in as ``misplaced`` (slot -> why not;
see ``planning.misplaced``), as Nomad's reconciler asks the scheduler whether
an update can happen in place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from federation import failover
from federation.inventory import NodeState
from federation.model import (
    LIVE_STATES,
    CommandKey,
    DeploymentRecord,
    Desired,
    Observed,
    Op,
    SlotKey,
    SlotRecord,
)
from policies.spec import OnReconnect

RESEND_AFTER = 5.0  # seconds before an unconfirmed command is sent again
DEFAULT_GRACE = 10.0  # seconds out of contact before replacement, unless told otherwise
_NOTHING: Mapping[SlotKey, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class Place:
    slot: SlotRecord  # as it is now; the loop writes the new generation
    generation: int
    revision: int
    prefer_node: str | None = None  # a template change stays on its node if it fits
    reason: str = ""
    failover: bool = False  # replaces a replica on an unreachable node (rate-limited)


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    slot: SlotRecord


@dataclass(frozen=True, slots=True, kw_only=True)
class Stop:
    node: str
    deployment: str
    index: int
    generation: int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Forget:
    deployment: str
    index: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Purge:
    deployment: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Reclaim:
    """keep-original: the slot runs on ``node`` again, where its original instance
    came back, at ``generation`` (above the replacement's, which it supersedes)."""

    slot: SlotRecord
    node: str
    generation: int
    revision: int
    reason: str


Action = Place | Run | Stop | Forget | Purge | Reclaim


def _recently_sent(observed: Observed, key: CommandKey, now: float) -> bool:
    sent = observed.inflight.get(key)
    return sent is not None and now - sent < RESEND_AFTER


def reconcile(desired: Desired, observed: Observed, now: float, *,
              misplaced: Mapping[SlotKey, str] = _NOTHING,
              waiting: Mapping[SlotKey, str] = _NOTHING,
              grace: float = DEFAULT_GRACE,
              replaced_from: Mapping[SlotKey, str] = _NOTHING) -> list[Action]:
    """``waiting``: slots whose template change the rollout holds back for now (slot ->
    why; see ``rollout.step``); they keep their instance. Nothing else is paced.

    ``grace``: seconds out of contact before a replica is replaced when its deployment
    sets no ``failover.grace`` (the controller's ``--lost-after``). ``replaced_from``:
    slot -> the node a failover replacement moved it away from (for keep-original)."""
    actions: list[Action] = []
    for name, dep in sorted(desired.deployments.items()):
        replicas = 0 if dep.deleted else dep.spec.replicas
        slots = {i: s for (d, i), s in desired.slots.items() if d == name}
        for index in range(replicas):
            slot = slots.get(index) or SlotRecord(deployment=name, index=index, generation=0,
                                                  revision=dep.revision, template=dep.template)
            actions.extend(_slot_actions(slot, dep, observed, now, misplaced.get(slot.key),
                                         paced=slot.key in waiting, grace=grace))
        for index, slot in sorted(slots.items()):
            if index >= replicas:
                if slot.node is not None:
                    why = "deployment deleted" if dep.deleted else f"scaled to {replicas}"
                    actions.append(Stop(node=slot.node, deployment=name, index=index,
                                        generation=slot.generation, reason=why))
                actions.append(Forget(deployment=name, index=index))
        if dep.deleted and not _any_live(observed, name):
            actions.append(Purge(deployment=name))
    actions.extend(_superseded(desired, observed, now, replaced_from))
    return actions


def _slot_actions(slot: SlotRecord, dep: DeploymentRecord, observed: Observed,
                  now: float, may_not_stay: str | None, *, paced: bool = False,
                  grace: float = DEFAULT_GRACE) -> list[Action]:
    node = observed.nodes.get(slot.node) if slot.node else None
    if slot.node is None or node is None:
        if slot.node is not None:
            why = f"node {slot.node} is unknown"
        else:
            why = "new replica" if slot.generation == 0 else "not placed yet"
        return [Place(slot=slot, generation=slot.generation + 1, revision=dep.revision,
                      reason=why)]
    if node.state is not NodeState.READY:
        verdict = failover.verdict(dep.spec.failover, node, now, grace)
        if verdict.replace:
            return [Place(slot=slot, generation=slot.generation + 1, revision=dep.revision,
                          reason=verdict.reason, failover=True)]
    if may_not_stay is not None and node.state is NodeState.READY:
        return [Place(slot=slot, generation=slot.generation + 1, revision=dep.revision,
                      reason=may_not_stay)]
    if slot.template != dep.template and node.state is NodeState.READY and not paced:
        return [Place(slot=slot, generation=slot.generation + 1, revision=dep.revision,
                      prefer_node=slot.node,
                      reason=f"template changed in revision {dep.revision}")]
    inst = observed.on_node(slot.node, slot.deployment, slot.index)
    if inst is not None and inst.generation == slot.generation:
        return []
    key: CommandKey = (slot.node, Op.RUN, slot.deployment, slot.index, slot.generation)
    if node.state is NodeState.READY and not _recently_sent(observed, key, now):
        return [Run(slot=slot)]
    return []


def _any_live(observed: Observed, deployment: str) -> bool:
    """Live instances that can still be stopped (a Lost node's cannot, until it returns)."""
    return any(d == deployment and r.state in LIVE_STATES
               and (n := observed.nodes.get(node)) is not None and n.state is not NodeState.LOST
               for (node, d, _), r in observed.instances.items())


def _superseded(desired: Desired, observed: Observed, now: float,
                replaced_from: Mapping[SlotKey, str] = _NOTHING) -> list[Action]:
    out: list[Action] = []
    reclaimed: set[SlotKey] = set()
    for (node, dep, index), inst in sorted(observed.instances.items()):
        if inst.state not in LIVE_STATES:
            continue
        slot = desired.slots.get((dep, index))
        if slot is not None and slot.node == node and slot.generation <= inst.generation:
            continue
        if slot is not None and _keeps_original(desired, slot, node, inst.generation,
                                                replaced_from):
            # Not stopped, not even queued for when it returns: once its node is Ready
            # again (trusted, not flapping) the original is kept instead.
            where = observed.nodes.get(node)
            if where is not None and where.state is NodeState.READY and slot.key not in reclaimed:
                reclaimed.add(slot.key)
                out.append(Reclaim(slot=slot, node=node, generation=slot.generation + 1,
                                   revision=desired.deployments[dep].revision,
                                   reason=f"keep-original: {node} is back with generation "
                                   f"{inst.generation} running; the replacement on {slot.node} "
                                   f"(generation {slot.generation}) is superseded"))
            continue
        if dep in desired.deployments and slot is not None and slot.node == node:
            why = f"generation {inst.generation} superseded by {slot.generation}"
        elif slot is not None:
            why = f"slot moved to {slot.node or 'nowhere'} at generation {slot.generation}"
        else:
            why = "no such slot"
        # The stop names the instance's own generation: the agent stops instances of
        # the slot at or below it and never a newer one it may already run.
        key: CommandKey = (node, Op.STOP, dep, index, inst.generation)
        where = observed.nodes.get(node)
        if where is None or _recently_sent(observed, key, now):
            continue
        if (where.state is NodeState.LOST or where.unreachable_since is not None) and (
                key in observed.inflight):
            continue  # queued in the lost node's session once; it gets it when it returns
        out.append(Stop(node=node, deployment=dep, index=index,
                        generation=inst.generation, reason=why))
    return out


def _keeps_original(desired: Desired, slot: SlotRecord, node: str, generation: int,
                    replaced_from: Mapping[SlotKey, str]) -> bool:
    """Whether the live instance at ``generation`` on ``node`` is the original of a slot
    that failover replaced elsewhere, in a deployment that keeps originals."""
    record = desired.deployments.get(slot.deployment)
    return (record is not None and not record.deleted
            and slot.index < record.spec.replicas
            and record.spec.failover.on_reconnect is OnReconnect.KEEP_ORIGINAL
            and replaced_from.get(slot.key) == node
            and slot.node is not None and slot.node != node and slot.generation > generation)
