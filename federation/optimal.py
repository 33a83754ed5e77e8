"""Optimal batch placement: the placement of a batch of replicas as one 0/1
program, solved exactly by scipy's MILP solver (HiGHS) under a time limit.

It serves the ``optimal`` strategy (small batches) and measures how far the
heuristics are from the best (``bench/quality.py``).

The program
-----------

Replicas r = 1..R, nodes n = 1..N; ``allowed[r, n]`` says every static
filter of the scheduler lets r run on n (residency, selectors, platform, ...).
Resources k are cpu, memory and each device kind: replica r needs ``d[r, k]``,
node n has ``free[n, k]`` left, ``size[n, k]`` allocatable and ``taken[n, k] =
size[n, k] - free[n, k]`` in use.

    x[r, n] in {0, 1}   r runs on n (a variable only where allowed[r, n])
    u >= 0              the highest cpu or memory utilisation of a balanced node

    minimise    J = (1/R) * sum_r sum_n rtt[r, n] * x[r, n]  +  beta * u

    subject to  sum_n x[r, n] = 1                        each replica placed once
                sum_r d[r, k] * x[r, n] <= free[n, k]      each node, each resource
                (taken[n, k] + sum_r d[r, k] * x[r, n]) / size[n, k] <= u
                                                         each balanced node, k in {cpu, memory}
                sum_{r in G} sum_{n in j} x[r, n] <= room_G[j]
                                                         each group G, each of its domains j

``rtt[r, n]`` is the share-weighted mean round-trip time (ms) from r's users
to n, so the first term of J is the mean user RTT over the replicas. The
balanced nodes are those some replica may run on, with ``size > 0``; ``u`` is
then their peak utilisation (0..1). ``beta`` (:data:`BALANCE_WEIGHT_MS`, in
ms) prices a whole unit of peak utilisation in mean RTT: with 20 ms, ten
points of peak utilisation weigh as much as 2 ms of mean user RTT. A group
G is a set of replicas with a partition of the nodes into domains (each
node, or the nodes of each site, region or provider) and room per domain:
``maxPerNode``/``maxPerSite``, required anti-affinity and host ports.

When not every replica fits, the program above is infeasible and the status
says so. A second program then places as many replicas as any assignment can:
``= 1`` becomes ``<= 1`` and every placed replica earns a reward
``W = max rtt + beta * u_max + 1`` ms, more than the rest of J can ever gain
by placing one replica fewer; among the assignments that place the most, it
minimises J.

Status: ``optimal`` (every replica placed, J proven within the relative gap),
``time-limit`` (the limit passed first: the assignment is the best found,
possibly empty, and ``gap`` bounds how far it is from the best), and
``infeasible`` (proven: not every replica fits; the assignment places the
most that can). The time limit is HiGHS's own; with an infeasible batch the
second program gets the limit again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_array

from federation.scheduler import (
    Apart,
    Decision,
    Explanation,
    Ranked,
    Rejection,
    Request,
    Round,
    Scope,
    feasible,
    place,
    refusals,
)
from policies.quantity import format_cpu, human_memory

# Mean user RTT (ms) that a whole unit of peak utilisation is worth.
BALANCE_WEIGHT_MS = 20.0
# Balanced resources: the first two columns of demand/free/size.
CPU, MEMORY = 0, 1
DEFAULT_TIME_LIMIT = 2.0  # seconds
DEFAULT_REL_GAP = 1e-4  # HiGHS's own default

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]


class Status(StrEnum):
    OPTIMAL = "optimal"
    TIME_LIMIT = "time-limit"
    INFEASIBLE = "infeasible"


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class Group:
    """At most ``room[j]`` of the replicas ``members`` in domain j, where node n
    is in domain ``domain[n]``: the node itself (maxPerNode, anti-affinity per
    node, a host port), its site, region or provider."""

    members: tuple[int, ...]
    domain: IntArray  # (N,) 0..D-1
    room: IntArray  # (D,)

    @classmethod
    def per_node(cls, members: Iterable[int], room: Sequence[int] | IntArray) -> Group:
        rooms = np.asarray(room, dtype=np.int64)
        return cls(members=tuple(members), domain=np.arange(rooms.size, dtype=np.int64),
                   room=rooms)


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class Problem:
    """A batch placement as arrays; see the module docstring for the program.

    Columns of ``demand``/``free``/``size``: cpu, memory, then any other
    resource (disk, device kinds), in the same units per column.
    """

    demand: FloatArray  # (R, K)
    free: FloatArray  # (N, K)
    size: FloatArray  # (N, K) allocatable
    allowed: BoolArray  # (R, N)
    rtt: FloatArray  # (R, N) ms, finite and >= 0
    groups: tuple[Group, ...] = ()
    balance_weight: float = BALANCE_WEIGHT_MS

    def __post_init__(self) -> None:
        r, n = self.allowed.shape
        k = self.demand.shape[1] if self.demand.ndim == 2 else -1
        shapes = {"demand": (self.demand.shape, (r, k)), "free": (self.free.shape, (n, k)),
                  "size": (self.size.shape, (n, k)),
                  "rtt": (self.rtt.shape, (r, n))}
        for name, (have, want) in shapes.items():
            if have != want:
                raise ValueError(f"{name} has shape {have}, expected {want}")
        if k < 2:
            raise ValueError(f"demand has {k} columns, expected at least cpu and memory")
        if not np.all(np.isfinite(self.rtt)) or np.any(self.rtt < 0):
            raise ValueError("rtt must be finite and not negative")
        for i, g in enumerate(self.groups):
            if g.domain.shape != (n,):
                raise ValueError(f"groups[{i}].domain has shape {g.domain.shape}, expected "
                                 f"({n},)")
            if g.room.ndim != 1 or np.any((g.domain < 0) | (g.domain >= g.room.size)):
                raise ValueError(f"groups[{i}].domain names a domain outside "
                                 f"0..{g.room.size - 1}")
            if any(not 0 <= m < r for m in g.members):
                raise ValueError(f"groups[{i}] names a replica outside 0..{r - 1}")

    @property
    def replicas(self) -> int:
        return int(self.allowed.shape[0])

    @property
    def nodes(self) -> int:
        return int(self.allowed.shape[1])

    @property
    def balanced(self) -> BoolArray:
        """Nodes whose utilisation the balance term counts: some replica may run there."""
        return np.asarray(self.allowed.any(axis=0), dtype=np.bool_)


Assignment = tuple[int | None, ...]  # node index per replica, None: unplaced


@dataclass(frozen=True, slots=True, kw_only=True)
class Evaluation:
    placed: int
    objective: float  # J of the module docstring
    mean_rtt: float  # ms, over placed replicas; nan when none is placed
    balance: float  # peak cpu or memory utilisation over the balanced nodes


@dataclass(frozen=True, slots=True, kw_only=True)
class Solution:
    status: Status
    assignment: Assignment
    objective: float | None  # J of the assignment; None when nothing was found
    gap: float | None  # relative gap proven by the solver (0.01 is 1 %); None: no bound
    evaluation: Evaluation | None = field(default=None)

    @property
    def complete(self) -> bool:
        return all(a is not None for a in self.assignment)


# -- what an assignment is worth ----------------------------------------------------


def utilisation(problem: Problem, assignment: Assignment) -> FloatArray:
    """(N, 2) cpu and memory utilisation after ``assignment``; 0 where size is 0."""
    added = np.zeros_like(problem.free)
    for r, n in enumerate(assignment):
        if n is not None:
            added[n] += problem.demand[r]
    size = problem.size[:, :2]
    taken = size - problem.free[:, :2] + added[:, :2]
    out: FloatArray = np.divide(taken, size, out=np.zeros_like(taken), where=size > 0)
    return out


def evaluate(problem: Problem, assignment: Assignment) -> Evaluation:
    """What J, mean user RTT and peak utilisation ``assignment`` achieves."""
    rtts = [float(problem.rtt[r, n]) for r, n in enumerate(assignment) if n is not None]
    util = utilisation(problem, assignment)[problem.balanced]
    balance = float(util.max()) if util.size else 0.0
    total = sum(rtts) / problem.replicas if problem.replicas else 0.0
    return Evaluation(placed=len(rtts), objective=total + problem.balance_weight * balance,
                      mean_rtt=sum(rtts) / len(rtts) if rtts else float("nan"),
                      balance=balance)


def violations(problem: Problem, assignment: Assignment) -> list[str]:
    """Every rule ``assignment`` breaks, in words; [] when it is valid."""
    out = []
    added = np.zeros_like(problem.free)
    for r, n in enumerate(assignment):
        if n is None:
            continue
        if not problem.allowed[r, n]:
            out.append(f"replica {r} on node {n}, which its filters refuse")
        added[n] += problem.demand[r]
    over = np.argwhere(added > np.maximum(problem.free, 0) + 1e-9)
    out += [f"node {n} short of resource {k}" for n, k in over]
    for i, g in enumerate(problem.groups):
        counts = np.zeros(g.room.shape, dtype=np.int64)
        for r in g.members:
            n = assignment[r]
            if n is not None:
                counts[g.domain[n]] += 1
        out += [f"group {i}: {counts[j]} in domain {j}, room {g.room[j]}"
                for j in np.flatnonzero(counts > g.room)]
    return out


# -- the solver ---------------------------------------------------------------------


def solve(problem: Problem, *, time_limit: float = DEFAULT_TIME_LIMIT,
          rel_gap: float = DEFAULT_REL_GAP) -> Solution:
    """The best assignment of ``problem`` (see the module docstring)."""
    if problem.replicas == 0:
        return _solution(problem, Status.OPTIMAL, (), 0.0)
    program = _Program(problem)
    options = {"time_limit": time_limit, "mip_rel_gap": rel_gap}
    res = program.run(reward=0.0, options=options)
    if res.status == 0 and res.x is not None:
        return _solution(problem, Status.OPTIMAL, program.assignment(res.x), _gap(res))
    if res.status == 1:
        found = program.assignment(res.x) if res.x is not None else (None,) * problem.replicas
        return _solution(problem, Status.TIME_LIMIT, found, _gap(res) if res.x is not None else None)
    # Infeasible: not every replica fits. Place the most that can.
    reward = program.reward()
    res = program.run(reward=reward, options=options)
    if res.x is None:
        return _solution(problem, Status.INFEASIBLE, (None,) * problem.replicas, None)
    found = program.assignment(res.x)
    placed = sum(a is not None for a in found)
    cost = float(res.fun) + reward * placed
    bound = res.get("mip_dual_bound")
    gap = None if bound is None else max(0.0, float(res.fun) - float(bound)) / max(cost, 1e-9)
    return _solution(problem, Status.INFEASIBLE, found, gap)


def _gap(res: Any) -> float | None:
    gap = res.get("mip_gap")
    return None if gap is None else max(0.0, float(gap))


def _solution(problem: Problem, status: Status, assignment: Assignment,
              gap: float | None) -> Solution:
    if status is Status.TIME_LIMIT and all(a is None for a in assignment):
        return Solution(status=status, assignment=assignment, objective=None, gap=None)
    ev = evaluate(problem, assignment)
    return Solution(status=status, assignment=assignment, objective=ev.objective, gap=gap,
                    evaluation=ev)


class _Program:
    """The program's matrices for ``problem``: one variable per allowed (r, n)
    pair, then u."""

    def __init__(self, problem: Problem) -> None:
        self.p = problem
        pairs = np.argwhere(problem.allowed)
        self.pr: IntArray = pairs[:, 0].astype(np.int64)
        self.pn: IntArray = pairs[:, 1].astype(np.int64)
        self.u = len(self.pr)  # index of u
        rows: list[IntArray] = []
        cols: list[IntArray] = []
        vals: list[FloatArray] = []
        lower: list[FloatArray] = []
        upper: list[FloatArray] = []

        def add(row: IntArray, col: IntArray, val: FloatArray, lo: FloatArray,
                hi: FloatArray) -> None:
            offset = sum(len(b) for b in upper)
            rows.append(row + offset)
            cols.append(col)
            vals.append(val)
            lower.append(lo)
            upper.append(hi)

        self._assignment_rows(add)
        self._capacity_rows(add)
        self._balance_rows(add)
        self._group_rows(add)
        count = sum(len(b) for b in upper)
        self.matrix = coo_array((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                                shape=(count, self.u + 1)).tocsr()
        self.lower = np.concatenate(lower)
        self.upper = np.concatenate(upper)
        self.assign_rows = problem.replicas  # the first rows: sum_n x[r, n] (= 1 or <= 1)

    def _assignment_rows(self, add: Any) -> None:
        r = self.p.replicas
        add(self.pr, np.arange(self.u), np.ones(self.u), np.ones(r), np.ones(r))

    def _capacity_rows(self, add: Any) -> None:
        p = self.p
        for k in range(p.demand.shape[1]):
            need = p.demand[self.pr, k]
            used = need > 0
            if not used.any():
                continue
            # Scaled per resource, so bytes and millicores sit in one well-conditioned matrix.
            scale = float(p.demand[:, k].max())
            add(self.pn[used], np.flatnonzero(used), need[used] / scale,
                np.full(p.nodes, -np.inf), np.maximum(p.free[:, k], 0) / scale)

    def _balance_rows(self, add: Any) -> None:
        p = self.p
        for k in (CPU, MEMORY):
            size = p.size[:, k]
            nodes = np.flatnonzero(p.balanced & (size > 0))
            if not nodes.size:
                continue
            row_of = np.full(p.nodes, -1)
            row_of[nodes] = np.arange(nodes.size)
            mine = (row_of[self.pn] >= 0) & (p.demand[self.pr, k] > 0)
            coeff = p.demand[self.pr[mine], k] / size[self.pn[mine]]
            taken = (size[nodes] - p.free[nodes, k]) / size[nodes]
            add(np.concatenate([row_of[self.pn[mine]], np.arange(nodes.size)]),
                np.concatenate([np.flatnonzero(mine), np.full(nodes.size, self.u)]),
                np.concatenate([coeff, -np.ones(nodes.size)]),
                np.full(nodes.size, -np.inf), -taken)

    def _group_rows(self, add: Any) -> None:
        for g in self.p.groups:
            where = g.domain[self.pn]
            mine = np.isin(self.pr, np.asarray(g.members, dtype=np.int64))
            add(where[mine], np.flatnonzero(mine), np.ones(int(mine.sum())),
                np.full(g.room.size, -np.inf), np.maximum(g.room, 0).astype(np.float64))

    def costs(self) -> FloatArray:
        c = np.empty(self.u + 1)
        c[: self.u] = self.p.rtt[self.pr, self.pn] / self.p.replicas
        c[self.u] = self.p.balance_weight
        return c

    def reward(self) -> float:
        """Per placed replica: more than J can ever differ between two assignments."""
        taken = 1 - np.divide(self.p.free[:, :2], self.p.size[:, :2],
                              out=np.ones_like(self.p.free[:, :2]), where=self.p.size[:, :2] > 0)
        u_max = max(1.0, float(taken.max()) if taken.size else 0.0)
        rtt_max = float(self.p.rtt.max()) if self.p.rtt.size else 0.0
        return rtt_max + self.p.balance_weight * u_max + 1.0

    def run(self, *, reward: float, options: dict[str, float]) -> Any:
        c = self.costs()
        lower = self.lower.copy()
        if reward:
            c[: self.u] -= reward
            lower[: self.assign_rows] = 0.0
        integrality = np.ones(self.u + 1)
        integrality[self.u] = 0
        bounds = Bounds(np.zeros(self.u + 1), np.r_[np.ones(self.u), np.inf])
        return milp(c, integrality=integrality, bounds=bounds,
                    constraints=LinearConstraint(self.matrix, lower, self.upper),
                    options=options)

    def assignment(self, x: FloatArray) -> Assignment:
        out: list[int | None] = [None] * self.p.replicas
        for i in np.flatnonzero(x[: self.u] > 0.5):
            out[int(self.pr[i])] = int(self.pn[i])
        return tuple(out)


# -- the scheduler's round as a problem ----------------------------------------------
#
# The scheduler's filters decide what is allowed (``feasible``), with what earlier
# placements of the round reserved; the program adds what only a batch has: the
# replicas' shares of each node, and limits that count replicas of the batch.


def problem_from_round(requests: Sequence[Request], rnd: Round, *,
                       balance_weight: float = BALANCE_WEIGHT_MS) -> Problem:
    """The program for placing ``requests`` together in ``rnd`` (over
    ``rnd.node_names``)."""
    nodes = len(rnd.node_names)
    allowed = np.zeros((len(requests), nodes), dtype=np.bool_)
    for i, req in enumerate(requests):
        allowed[i] = feasible(req, rnd)
    kinds = sorted({kind for req in requests for kind in req.devices})
    demand = np.array([[req.cpu_millis, req.memory_bytes, req.disk_bytes,
                        *(req.devices.get(kind, 0) for kind in kinds)] for req in requests],
                      dtype=np.float64).reshape(len(requests), 3 + len(kinds))
    no_devices = np.zeros(nodes, dtype=np.int64)
    free = np.column_stack([rnd.free_cpu, rnd.free_mem, rnd.free_disk,
                            *(rnd.devices.get(kind, no_devices) for kind in kinds)])
    size = free.astype(np.float64)
    size[:, :3] = np.column_stack([rnd.alloc_cpu, rnd.alloc_mem, rnd.alloc_disk])
    rtt = np.array([user_rtt_ms(req, rnd) for req in requests],
                   dtype=np.float64).reshape(len(requests), nodes)
    return Problem(demand=demand, free=free.astype(np.float64), size=size, allowed=allowed,
                   rtt=rtt, groups=_groups(requests, rnd), balance_weight=balance_weight)


def user_rtt_ms(req: Request, rnd: Round) -> FloatArray:
    """Share-weighted mean RTT from ``req``'s users to each node (0 without users).
    An unknown RTT counts as the group's farthest known one, as the scheduler's
    user-rtt score rates it; a group with no RTT known prefers no node."""
    total = np.zeros(len(rnd.node_names))
    shares = sum(u.share for u in req.users) or 1.0
    for users in req.users:
        rtt = rnd.rtt_from(users.source)
        known = ~np.isnan(rtt)
        worst = float(rtt[known].max()) if known.any() else 0.0
        total += users.share * np.where(known, rtt, worst)
    return total / shares


def _groups(requests: Sequence[Request], rnd: Round) -> tuple[Group, ...]:
    by_deployment: dict[str, list[int]] = {}
    for i, req in enumerate(requests):
        by_deployment.setdefault(req.deployment, []).append(i)
    out: list[Group] = []
    for deployment, members in by_deployment.items():
        first = requests[members[0]]  # replicas of one deployment share its placement
        counts = rnd.counts(deployment)
        if first.max_per_node > 0:
            out.append(Group.per_node(members, first.max_per_node - counts.node))
        if first.max_per_site > 0:
            index, sites = rnd.domain(Scope.SITE)
            out.append(Group(members=tuple(members), domain=index,
                             room=first.max_per_site - counts.domains[Scope.SITE][:sites]))
        for term in first.apart:
            out += _apart(members, term, requests, rnd)
    for port in sorted({p for req in requests for p in req.host_ports}):
        sharing = [i for i, req in enumerate(requests) if port in req.host_ports]
        if len(sharing) > 1:
            out.append(Group.per_node(sharing, np.ones(len(rnd.node_names), dtype=np.int64)))
    return tuple(out)


def _apart(members: list[int], term: Apart, requests: Sequence[Request],
           rnd: Round) -> list[Group]:
    """A required anti-affinity term within the batch: no two of ``members`` and
    the replicas the selector matches in one domain (the filter already refuses
    domains holding matching replicas placed before). Nodes without the scope's
    label are in no domain: they hold any number."""
    index, size = rnd.domain(term.scope)
    room = np.ones(size + 1, dtype=np.int64)
    room[size] = len(requests)
    matching = [i for i, req in enumerate(requests) if term.selector.matches(req.labels)]
    others = [i for i in matching if i not in members]

    def group(replicas: list[int]) -> Group:
        return Group(members=tuple(replicas), domain=index, room=room)

    if set(members) <= set(matching):  # the usual case: the term keeps its own replicas apart
        return [group([*members, j]) for j in others] or [group(members)]
    return [group([i, j]) for i in members for j in matching if i != j]


# -- placing a batch -----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Placement:
    """One replica of an optimal batch: the scheduler's decision, and how the
    batch was decided (``optimal (gap 0.0%)``, ``fell back to two-phase: time
    limit``)."""

    decision: Decision
    note: str

    @property
    def message(self) -> str:
        return f"{self.note}; {self.decision.explanation.message}"


def place_optimal(requests: Sequence[Request], rnd: Round, *,
                  time_limit: float = DEFAULT_TIME_LIMIT) -> list[Placement]:
    """Place ``requests`` together, reserving each in ``rnd`` as ``place`` does.
    Replicas the program cannot place, and batches it cannot solve in time or
    does not model (required affinity or spread), go through two-phase."""
    unmodelled = next((r for r in requests
                       if r.near or r.split or any(s.required for s in r.spread)), None)
    if unmodelled is not None:
        return _two_phase(requests, rnd, "fell back to two-phase: required affinity, spread "
                                         "and split are not in the program")
    solution = solve(problem_from_round(requests, rnd), time_limit=time_limit)
    if solution.objective is None:
        return _two_phase(requests, rnd, "fell back to two-phase: time limit")
    gap = f"gap {solution.gap:.1%}" if solution.gap is not None else "gap unknown"
    note = (f"optimal ({gap})" if solution.status is not Status.TIME_LIMIT
            else f"best found in the time limit ({gap})")
    # The optimum's replicas first: a replica it leaves out must not take their room.
    order = sorted(range(len(requests)), key=lambda i: solution.assignment[i] is None)
    out: dict[int, Placement] = {}
    for i in order:
        req, n = requests[i], solution.assignment[i]
        fits = feasible(req, rnd)
        if n is None or not fits[n]:
            # Unplaced: two-phase explains why nothing fits. Refused: the filters
            # see the batch one replica at a time and have the last word.
            why = "no room left" if n is None else "the filters refuse its node"
            out[i] = Placement(decision=place(req, rnd), note=f"{note}, then two-phase: {why}")
            continue
        explanation = _explain(req, rnd, fits, n)
        rnd.reserve(req, rnd.node_names[n])
        out[i] = Placement(note=note, decision=Decision(
            request=req, node=rnd.node_names[n], site=rnd.nodes[n].site,
            explanation=explanation))
    return [out[i] for i in range(len(requests))]


def _two_phase(requests: Sequence[Request], rnd: Round, note: str) -> list[Placement]:
    # place() decides an ``optimal`` request as two-phase, one replica at a time.
    return [Placement(decision=place(r, rnd), note=note) for r in requests]


_UNIT_FORMATS: dict[str, Callable[[int], str]] = {
    "cpu": format_cpu, "memory": human_memory, "disk": human_memory, "count": str}


def _explain(req: Request, rnd: Round, fits: BoolArray, chosen: int) -> Explanation:
    """The histogram of the nodes the filters refuse, as ``place`` would give it."""
    counts: Counter[str] = Counter()
    numbers: dict[str, Rejection] = {}
    for i in np.flatnonzero(~fits):
        for rejection in refusals(req, rnd.nodes[int(i)], rnd):
            counts[rejection.reason] += 1
            seen = numbers.get(rejection.reason)
            if rejection.unit and (seen is None or (rejection.free or 0) > (seen.free or 0)):
                numbers[rejection.reason] = rejection
    details = {reason: f"(need {_UNIT_FORMATS[r.unit](r.need or 0)}, most free "
                       f"{_UNIT_FORMATS[r.unit](r.free or 0)})" for reason, r in numbers.items()}
    scores = {"user-rtt-ms": float(user_rtt_ms(req, rnd)[chosen])} if req.users else {}
    ranked = Ranked(node=rnd.node_names[chosen], site=rnd.nodes[chosen].site, total=0.0,
                    scores=scores)
    return Explanation(total_nodes=len(rnd.node_names), feasible=int(np.count_nonzero(fits)),
                       rejections=dict(counts), details=details, ranked=(ranked,),
                       strategy="optimal")
