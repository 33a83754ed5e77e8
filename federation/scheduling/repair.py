"""Making room for a replica that fits nowhere by moving replicas placed earlier
in the same pass.

Placing one replica at a time can paint itself into a corner: the first
deployment of a pass takes the cpu a later one needs on a node that only the
later one may use (anti-affinity, residency, a selector), while the first had
other nodes to go to. Those earlier replicas are decisions of this pass, not yet
sent to any agent, so moving them disturbs nothing. For a replica that fits
nowhere, each node it passes the static filters on is tried in turn (best score
first): replicas of other deployments placed earlier in this pass are taken off
it, newest first, until the stuck replica fits there; it is placed, then the
replicas taken off are placed again. If any of them then fits nowhere, or the
stuck replica's node no longer passes its own filters with them where they went,
everything is put back as it was and the next node is tried. Every decision
that comes out is an ordinary ``place`` decision, explained as any other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from federation.scheduling.columns import Round
from federation.scheduling.filters import evaluate, static_fits
from federation.scheduling.place import place
from federation.scheduling.request import Decision, Request
from federation.scheduling.scores import weigh

NODES_TRIED = 8  # nodes tried per stuck replica
MOVES_PER_NODE = 4  # replicas taken off one node at most


@dataclass(frozen=True, slots=True)
class Moved:
    """A replica placed earlier in the pass that made room: ``position`` is its
    place in the pass, ``origin`` the node it left, ``decision`` where it went."""

    position: int
    origin: str
    decision: Decision


@dataclass(frozen=True, slots=True)
class Room:
    """The stuck replica's decision, the node room was made on, and who moved."""

    decision: Decision
    node: str
    moved: tuple[Moved, ...]

    @property
    def note(self) -> str:
        moves = ", ".join(f"{m.decision.request.deployment}/{m.decision.request.slot} to "
                          f"{m.decision.node}" for m in self.moved
                          if m.decision.node != m.origin)
        return f"room made on {self.node} by moving {moves or 'nothing'}"


def moved_note(moved: Moved, req: Request) -> str:
    """A replica taken off a node may land on it again (room was made elsewhere)."""
    if moved.decision.node == moved.origin:
        return f"placed again on {moved.origin} while making room for {req.deployment}/{req.slot}"
    return f"moved from {moved.origin} to make room for {req.deployment}/{req.slot}"


def make_room(req: Request, placed: Sequence[tuple[int, Decision]], rnd: Round) -> Room | None:
    """Place ``req``, which fits nowhere, by moving some of ``placed`` (position in
    the pass, decision) elsewhere; None (and ``rnd`` as it was) when no node tried
    can be freed that way."""
    by_node: dict[str, list[tuple[int, Decision]]] = {}
    for position, decision in placed:
        # A replica of the same deployment needs what ``req`` needs: moving it frees
        # nothing ``req`` could use that it would not take back.
        if decision.node is not None and decision.request.deployment != req.deployment:
            by_node.setdefault(decision.node, []).append((position, decision))
    allowed = static_fits(req, rnd)
    total = weigh(req, rnd).total
    candidates = [node for node in by_node if allowed[rnd.index[node]]]
    candidates.sort(key=lambda node: (-float(total[rnd.index[node]]), node))
    for node in candidates[:NODES_TRIED]:
        room = _try(req, node, by_node[node][::-1][:MOVES_PER_NODE], rnd)
        if room is not None:
            return room
    return None


def _try(req: Request, node: str, newest_first: list[tuple[int, Decision]],
         rnd: Round) -> Room | None:
    i = rnd.index[node]
    taken: list[tuple[int, Decision]] = []
    for position, decision in newest_first:
        rnd.unreserve(decision.request, node)
        taken.append((position, decision))
        if evaluate(req, rnd).fits[i]:
            break
    else:
        _put_back(taken, [], rnd)
        return None
    mine = place(req, rnd)
    assert mine.node is not None  # it fits on ``node`` at least
    again: list[Decision] = []
    for _, decision in reversed(taken):  # in the order they were placed
        moved = place(decision.request, rnd)
        if moved.node is None:
            _put_back(taken, [mine, *again], rnd)
            return None
        again.append(moved)
    if not _still_fits(mine, rnd):
        _put_back(taken, [mine, *again], rnd)
        return None
    moves = tuple(Moved(position=position, origin=node, decision=moved)
                  for (position, _), moved in zip(reversed(taken), again, strict=True))
    return Room(decision=mine, node=node, moved=moves)


def _still_fits(decision: Decision, rnd: Round) -> bool:
    """Whether the stuck replica's node still passes its filters with the moved
    replicas where they went. ``place`` checks each moved replica against it (both
    ways for anti-affinity), so this is a net for what only the stuck replica's
    own filters see: a required affinity group it started alone, say, that a
    moved replica then joined elsewhere."""
    assert decision.node is not None
    rnd.unreserve(decision.request, decision.node)
    fits = bool(evaluate(decision.request, rnd).fits[rnd.index[decision.node]])
    rnd.reserve(decision.request, decision.node)
    return fits


def _put_back(taken: list[tuple[int, Decision]], placed: list[Decision], rnd: Round) -> None:
    """Undo an attempt: release what it placed, newest first, and reserve what it
    took off again, in the order it was first placed."""
    for decision in reversed(placed):
        assert decision.node is not None
        rnd.unreserve(decision.request, decision.node)
    for _, decision in reversed(taken):
        assert decision.node is not None
        rnd.reserve(decision.request, decision.node)
