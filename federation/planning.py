"""From deployments to scheduler requests, and dry runs over the live inventory.

Pure: shared by the reconcile loop (real placements), ``edgefed apply`` (the
refusal when a replica fits nowhere) and ``edgefed plan``, so all three use
the same scheduler path and the same explanations.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from federation.inventory import Node, NodeState
from federation.model import SlotKey, SlotRecord, template_of
from federation.scheduler import Decision, Request, Round, Usage, place
from policies.model import Deployment


def request_for(spec: Deployment, slot: int, generation: int, *,
                current_node: str | None = None) -> Request:
    c = spec.container
    return Request(
        deployment=spec.name, slot=slot, generation=generation, current_node=current_node,
        cpu_millis=c.resources.cpu_millis, memory_bytes=c.resources.memory_bytes,
        host_ports=tuple(p.host_port for p in c.ports if p.host_port),
        has_command=bool(c.command),
        node_selector=spec.placement.node_selector, site_selector=spec.placement.site_selector,
        weights=spec.placement.weights,
    )


def new_round(nodes: Iterable[Node], slots: Iterable[SlotRecord],
              specs: Mapping[str, Deployment], *, exclude: str | None = None) -> Round:
    """A scheduling round where every placed slot (except ``exclude``'s) holds its share."""
    committed: dict[str, Usage] = {}
    placed: dict[str, Counter[str]] = {}
    for slot in slots:
        spec = specs.get(slot.deployment)
        if slot.node is None or spec is None or slot.deployment == exclude:
            continue
        req = request_for(spec, slot.index, slot.generation)
        cur = committed.get(slot.node, Usage())
        committed[slot.node] = Usage(cpu_millis=cur.cpu_millis + req.cpu_millis,
                                     memory_bytes=cur.memory_bytes + req.memory_bytes,
                                     host_ports=cur.host_ports | frozenset(req.host_ports))
        placed.setdefault(slot.deployment, Counter())[slot.node] += 1
    return Round(nodes=list(nodes), committed=committed, placed=placed)


@dataclass(frozen=True, slots=True, kw_only=True)
class PlannedSlot:
    slot: int
    node: str | None
    site: str | None
    message: str
    moves: bool  # placed somewhere new (vs staying where it runs)


def dry_run(spec: Deployment, nodes: Sequence[Node], slots: Mapping[SlotKey, SlotRecord],
            specs: Mapping[str, Deployment]) -> list[PlannedSlot]:
    """Where each replica of ``spec`` would run if applied now."""
    rnd = new_round(nodes, slots.values(), specs, exclude=spec.name)
    template = template_of(spec)
    by_name = {n.name: n for n in nodes}
    out = []
    keep = []
    for index in range(spec.replicas):
        current = slots.get((spec.name, index))
        node = by_name.get(current.node) if current and current.node else None
        if (current is not None and node is not None and node.state is not NodeState.LOST
                and current.template == template):
            rnd.reserve(request_for(spec, index, current.generation), node.name)
            keep.append(PlannedSlot(slot=index, node=node.name, site=node.site, moves=False,
                                    message=f"stays on {node.name}"))
    kept = {p.slot for p in keep}
    for index in range(spec.replicas):
        if index in kept:
            continue
        current = slots.get((spec.name, index))
        decision: Decision = place(request_for(spec, index, (current.generation if current else 0)
                                               + 1), rnd)
        out.append(PlannedSlot(slot=index, node=decision.node, site=decision.site, moves=True,
                               message=decision.explanation.message))
    return sorted(keep + out, key=lambda p: p.slot)
