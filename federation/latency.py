"""Round-trip times between nodes and landmarks: what agents measured, and
Vivaldi network coordinates for every pair nobody measured.

    capacity.rtt_ms ──observe──▶ measured pairs (symmetric, newest wins, with age)
                                 └─▶ Vivaldi update of both ends' coordinates
    scheduler ──rtt_from(source, nodes)──▶ measured if fresh, else estimate, else nan

Each agent probes only a few peers and the configured landmarks, so a fleet of
N nodes needs about 8·N probes instead of N². Every endpoint (node or
landmark) gets a coordinate: a point in a small Euclidean space plus a
*height* (the access link every path to it crosses), and the RTT between two
endpoints is estimated as ``‖xᵢ - xⱼ‖ + hᵢ + hⱼ``. Coordinates move like
springs under each measurement, with the adaptive timestep of the Vivaldi
paper (Dabek, Cox, Kaashoek, Morris: "Vivaldi: A Decentralized Network
Coordinate System", SIGCOMM 2004): an endpoint whose own error estimate is
high moves more, one that is confident moves less. The controller runs the
algorithm for both ends of every measurement, so landmarks (which never
report) get coordinates too.

Pure: time is passed in (``now`` of the latest report) and randomness comes
from a seeded generator, so a run can be replayed.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from federation.wire import NODE_ID_RE

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# Vivaldi constants: the paper's recommended cc and ce (0.25 each).
CC = 0.25  # fraction of the way a fully uncertain endpoint moves toward agreement
CE = 0.25  # weight of the newest sample in the moving error estimate
ERROR_MAX = 1.5  # a wild sample must not make an endpoint's error unbounded
MIN_HEIGHT = 0.01  # ms; heights stay positive so a node never collapses into another
# An estimate is given only between endpoints whose coordinates have settled:
# both relative error estimates at most TRUSTED_ERROR after at least
# TRUSTED_SAMPLES updates. Before that, the pair is unknown (nan), never a guess.
TRUSTED_ERROR = 0.5
TRUSTED_SAMPLES = 8
# Users at a site reach a node of that same site over the site's own network:
# the measured RTT between the node and the site's other nodes if any, else this.
INTRA_SITE_MS = 1.0
# A site source is answered from at most this many of its nodes (the most
# confident ones): the median over them is as good and stays cheap.
SITE_SAMPLE = 16
MAX_RTT_MS = 60_000.0  # a report claiming more is a broken probe, not a network
MAX_TARGETS = 256  # entries of one report beyond this are ignored (bounded memory)
DENSE_AFTER = 256  # an endpoint with more measured neighbours gets array rows
DEFAULT_MAX_AGE = 600.0  # seconds a measurement counts as measured


@dataclass(frozen=True, slots=True, kw_only=True)
class Measured:
    """One measured pair as the API shows it."""

    a: str
    b: str
    rtt_ms: float
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """One endpoint's coordinate, as the API shows it."""

    name: str
    kind: str  # node | landmark
    site: str | None
    coords: tuple[float, ...]
    height: float
    error: float
    samples: int
    trusted: bool


class RttMatrix:
    """Measured RTTs plus Vivaldi coordinates; implements the scheduler's
    ``RttSource`` (:meth:`rtt_from`). Not thread-safe; one reconcile loop owns it."""

    def __init__(self, *, dimensions: int = 3, max_age: float = DEFAULT_MAX_AGE,
                 seed: int = 0) -> None:
        if not 1 <= dimensions <= 8:
            raise ValueError("dimensions must be between 1 and 8")
        self.dimensions = dimensions
        self.max_age = max_age
        self.now = 0.0  # controller time of the newest report observed
        self._random = random.Random(seed)
        self._index: dict[str, int] = {}
        self._names: list[str] = []
        self._coords: FloatArray = np.zeros((16, dimensions))
        self._height: FloatArray = np.full(16, MIN_HEIGHT)
        self._error: FloatArray = np.ones(16)
        self._samples: IntArray = np.zeros(16, dtype=np.int64)
        # Per endpoint: neighbour index -> (rtt ms, controller time measured).
        self._measured: list[dict[int, tuple[float, float]]] = []
        # Endpoints with many measured neighbours (landmarks every node probes) keep
        # them also as rows over every endpoint, so rtt_from needs no Python loop.
        self._dense: dict[int, tuple[FloatArray, FloatArray]] = {}
        self._site_of: dict[str, str] = {}
        self._site_nodes: dict[str, set[str]] = {}
        self._lookup: tuple[tuple[str, ...], int, IntArray] | None = None
        self._last_prune = 0.0
        self._refused: dict[str, str] = {}

    # -- feeding -----------------------------------------------------------------

    def observe(self, node: str, site: str, rtt_ms: Mapping[str, float], now: float) -> str:
        """Take one capacity report's measurements from ``node`` (of ``site``) at
        ``now``. Returns why entries were ignored when that differs from the last
        report of this node (so the caller warns once), else ''."""
        self.now = max(self.now, now)
        if self._site_of.get(node) != site:
            old = self._site_of.get(node)
            if old is not None:
                self._site_nodes.get(old, set()).discard(node)
            self._site_of[node] = site
            self._site_nodes.setdefault(site, set()).add(node)
        i = self._endpoint(node)
        problems = []
        for count, (target, value) in enumerate(sorted(rtt_ms.items())):
            why = _refusal(node, target, value, count)
            if why:
                problems.append(why)
                continue
            self._record(i, self._endpoint(target), float(value), now)
        if now - self._last_prune > self.max_age:
            self._prune(now)
        refused = "; ".join(problems[:5]) + (f" (+{len(problems) - 5} more)"
                                              if len(problems) > 5 else "")
        if refused == self._refused.get(node, ""):
            return ""
        self._refused[node] = refused
        return refused

    def _record(self, i: int, j: int, rtt: float, now: float) -> None:
        known = self._measured[i].get(j)
        if known is not None and known[1] > now:
            return  # an older report arriving late: the newer measurement stands
        for a, b in ((i, j), (j, i)):
            self._measured[a][b] = (rtt, now)
            dense = self._dense.get(a)
            if dense is not None:
                dense[0][b], dense[1][b] = rtt, now
            elif len(self._measured[a]) > DENSE_AFTER:
                self._densify(a)
        # Both ends move, each from the other's coordinate before this sample.
        other = (self._coords[j].tolist(), float(self._height[j]), float(self._error[j]))
        self._vivaldi(j, (self._coords[i].tolist(), float(self._height[i]),
                          float(self._error[i])), rtt)
        self._vivaldi(i, other, rtt)

    def _vivaldi(self, i: int, other: tuple[list[float], float, float], rtt: float) -> None:
        """Move endpoint ``i`` after a sample ``rtt`` to an endpoint at ``other``."""
        xj, hj, ej = other
        xi, hi, ei = self._coords[i].tolist(), float(self._height[i]), float(self._error[i])
        diff = [a - b for a, b in zip(xi, xj, strict=True)]
        planar = math.sqrt(sum(d * d for d in diff))
        predicted = planar + hi + hj
        weight = ei / (ei + ej) if ei + ej > 0 else 0.5
        relative = abs(predicted - rtt) / rtt
        self._error[i] = min(ERROR_MAX, relative * CE * weight + ei * (1 - CE * weight))
        force = CC * weight * (rtt - predicted)  # > 0 pushes apart, < 0 pulls together
        if planar < 1e-9:
            # Coincident points have no direction between them: pick one at random.
            diff = [self._random.gauss(0.0, 1.0) for _ in xi]
            norm = math.sqrt(sum(d * d for d in diff)) or 1.0
            self._coords[i] = [a + force * d / norm for a, d in zip(xi, diff, strict=True)]
        else:
            # Along the unit height vector [xᵢ - xⱼ, hᵢ + hⱼ] / predicted: the plane
            # and the heights each take their share of the correction.
            self._coords[i] = [a + force * d / predicted for a, d in zip(xi, diff, strict=True)]
            self._height[i] = max(MIN_HEIGHT, hi + force * (hi + hj) / predicted)
        self._samples[i] += 1

    def _endpoint(self, name: str) -> int:
        found = self._index.get(name)
        if found is not None:
            return found
        i = len(self._names)
        if i == len(self._height):
            self._grow()
        self._index[name] = i
        self._names.append(name)
        self._measured.append({})
        return i

    def _grow(self) -> None:
        size = 2 * len(self._height)
        extra = size - len(self._height)
        self._coords = np.vstack([self._coords, np.zeros((extra, self.dimensions))])
        self._height = np.concatenate([self._height, np.full(extra, MIN_HEIGHT)])
        self._error = np.concatenate([self._error, np.ones(extra)])
        self._samples = np.concatenate([self._samples, np.zeros(extra, dtype=np.int64)])
        for a, (rtt, at) in list(self._dense.items()):
            self._dense[a] = (np.concatenate([rtt, np.full(extra, np.nan)]),
                              np.concatenate([at, np.full(extra, -np.inf)]))

    def _densify(self, a: int) -> None:
        rtt, at = np.full(len(self._height), np.nan), np.full(len(self._height), -np.inf)
        for b, (value, when) in self._measured[a].items():
            rtt[b], at[b] = value, when
        self._dense[a] = (rtt, at)

    def _prune(self, now: float) -> None:
        """Forget measurements older than ``max_age`` (their estimate remains)."""
        self._last_prune = now
        oldest = now - self.max_age
        for a, neighbours in enumerate(self._measured):
            stale = [b for b, (_, at) in neighbours.items() if at < oldest]
            for b in stale:
                del neighbours[b]
            if a in self._dense and stale:
                rtt, at = self._dense[a]
                rtt[stale], at[stale] = np.nan, -np.inf

    # -- reading -----------------------------------------------------------------

    def rtt_from(self, source: str, nodes: Sequence[str]) -> FloatArray:
        """RTT in ms from ``source`` to each of ``nodes``, nan where unknown.

        ``source`` is a site (users at that site: the median over the site's nodes,
        and a node of that site gets its intra-site RTT) when any reporting node
        belongs to a site of that name, else a landmark (or any endpoint) name."""
        idx = self._indices(nodes)
        members = self._site_nodes.get(source)
        if members:
            return self._from_site(source, sorted(members), idx)
        j = self._index.get(source)
        if j is None:
            return np.full(len(idx), np.nan)
        return self._to_endpoint(j, idx, self._positions(idx))

    def rtt(self, a: str, b: str) -> float:
        """RTT between two endpoints: measured if fresh, else estimated, else nan."""
        i, j = self._index.get(a), self._index.get(b)
        if i is None or j is None:
            return math.nan
        idx = np.array([i], dtype=np.int64)
        return float(self._to_endpoint(j, idx, self._positions(idx))[0])

    def estimate(self, a: str, b: str) -> float:
        """The Vivaldi estimate alone (nan until both coordinates are trusted)."""
        i, j = self._index.get(a), self._index.get(b)
        if i is None or j is None:
            return math.nan
        return float(self._estimates(j, np.array([i], dtype=np.int64))[0])

    def _indices(self, nodes: Sequence[str]) -> IntArray:
        key = tuple(nodes)
        cached = self._lookup
        if cached is not None and cached[1] == len(self._names) and cached[0] == key:
            return cached[2]
        get = self._index.get
        idx = np.fromiter((get(n, -1) for n in key), dtype=np.int64, count=len(key))
        self._lookup = (key, len(self._names), idx)
        return idx

    def _positions(self, idx: IntArray) -> IntArray:
        """Endpoint index -> position in ``idx`` (-1 where not asked for)."""
        where = np.full(len(self._names), -1, dtype=np.int64)
        known = idx >= 0
        where[idx[known]] = np.nonzero(known)[0]
        return where

    def _trusted(self) -> npt.NDArray[np.bool_]:
        n = len(self._names)
        return (self._error[:n] <= TRUSTED_ERROR) & (self._samples[:n] >= TRUSTED_SAMPLES)

    def _estimates(self, j: int, idx: IntArray,
                   trusted: npt.NDArray[np.bool_] | None = None) -> FloatArray:
        trusted = self._trusted() if trusted is None else trusted
        out = np.full(len(idx), np.nan)
        if not trusted[j]:
            return out
        known = idx >= 0
        sub = idx[known]
        planar = np.linalg.norm(self._coords[sub] - self._coords[j], axis=1)
        est = planar + self._height[sub] + self._height[j]
        out[known] = np.where(trusted[sub], est, np.nan)
        return out

    def _fresh(self, j: int) -> tuple[IntArray, FloatArray]:
        """Neighbours of ``j`` with a measurement younger than ``max_age``."""
        oldest = self.now - self.max_age
        dense = self._dense.get(j)
        if dense is not None:
            rtt, at = dense
            hit = np.nonzero(at[:len(self._names)] >= oldest)[0]
            return hit.astype(np.int64), rtt[hit]
        pairs = [(b, v) for b, (v, at) in self._measured[j].items() if at >= oldest]
        return (np.array([b for b, _ in pairs], dtype=np.int64),
                np.array([v for _, v in pairs], dtype=np.float64))

    def _to_endpoint(self, j: int, idx: IntArray, where: IntArray,
                     trusted: npt.NDArray[np.bool_] | None = None) -> FloatArray:
        out = self._estimates(j, idx, trusted)
        neighbours, values = self._fresh(j)
        if len(neighbours):
            hit = where[neighbours]
            mine = hit >= 0
            out[hit[mine]] = values[mine]  # measured wins over estimated
        same = idx == j
        out[same] = 0.0
        return out

    def _from_site(self, site: str, members: list[str], idx: IntArray) -> FloatArray:
        where = self._positions(idx)
        ends = sorted((self._index[m] for m in members),
                      key=lambda e: (float(self._error[e]), e))[:SITE_SAMPLE]
        trusted = self._trusted()
        stack = np.vstack([self._to_endpoint(e, idx, where, trusted) for e in ends])
        out = _nanmedian_columns(stack)
        member_ids = {self._index[m] for m in members}
        oldest = self.now - self.max_age
        for m in member_ids:
            pos = int(where[m])
            if pos < 0:
                continue
            inside = [v for b, (v, at) in self._measured[m].items()
                      if at >= oldest and b in member_ids]
            out[pos] = statistics.median(inside) if inside else INTRA_SITE_MS
        return out

    # -- for operators -----------------------------------------------------------

    def endpoints(self) -> list[Endpoint]:
        trusted = self._trusted()
        return [Endpoint(name=name, kind="node" if name in self._site_of else "landmark",
                         site=self._site_of.get(name),
                         coords=tuple(round(float(v), 3) for v in self._coords[i]),
                         height=round(float(self._height[i]), 3),
                         error=round(float(self._error[i]), 4),
                         samples=int(self._samples[i]), trusted=bool(trusted[i]))
                for i, name in enumerate(self._names)]

    def measured(self) -> list[Measured]:
        """Fresh measured pairs, each once (names in order: a < b)."""
        oldest = self.now - self.max_age
        out = []
        for a, neighbours in enumerate(self._measured):
            for b, (rtt, at) in neighbours.items():
                if a < b and at >= oldest:
                    first, second = sorted((self._names[a], self._names[b]))
                    out.append(Measured(a=first, b=second, rtt_ms=rtt, at=at))
        return sorted(out, key=lambda m: (m.a, m.b))

    def landmarks(self) -> list[str]:
        return [n for n in self._names if n not in self._site_of]

    def sites(self) -> list[str]:
        return sorted(s for s, members in self._site_nodes.items() if members)

    def nodes(self) -> list[str]:
        return sorted(self._site_of)

    def median_error(self) -> float | None:
        """Median relative error of the estimates on the fresh measured pairs
        (a self-check of the coordinates; None before any pair is estimable)."""
        errors = []
        for m in self.measured():
            est = self.estimate(m.a, m.b)
            if not math.isnan(est) and m.rtt_ms > 0:
                errors.append(abs(est - m.rtt_ms) / m.rtt_ms)
        return float(np.median(errors)) if errors else None

    def snapshot(self, now: float, sources: Iterable[str] | None = None) -> dict[str, Any]:
        """The matrix as a JSON document: endpoints with coordinates and error,
        measured pairs with their age and estimate, and for each source (default:
        every landmark and site) the RTT to every node, measured or estimated."""
        nodes = self.nodes()
        err = self.median_error()
        rows = []
        for source in (self.landmarks() + self.sites()) if sources is None else sources:
            values = self.rtt_from(source, nodes)
            for node, value in zip(nodes, values.tolist(), strict=True):
                measured = self._measured_between(source, node)
                rows.append({"from": source, "node": node,
                             "rtt_ms": None if math.isnan(value) else round(value, 3),
                             "measured": measured, "basis": self._basis(source, node, value,
                                                                        measured)})
        return {
            "dimensions": self.dimensions,
            "median_relative_error": None if err is None else round(err, 4),
            "endpoints": [{"name": e.name, "kind": e.kind, "site": e.site,
                           "coords": list(e.coords), "height": e.height, "error": e.error,
                           "samples": e.samples, "trusted": e.trusted}
                          for e in sorted(self.endpoints(), key=lambda e: (e.kind, e.name))],
            "measured": [{"a": m.a, "b": m.b, "rtt_ms": round(m.rtt_ms, 3),
                          "estimate_ms": _rounded(self.estimate(m.a, m.b)),
                          "age_seconds": round(now - m.at, 1)} for m in self.measured()],
            "sources": rows,
        }

    def _basis(self, source: str, node: str, value: float, measured: bool) -> str:
        if measured:
            return "measured"
        if math.isnan(value):
            return "unknown"
        if self._site_nodes.get(source) and self._site_of.get(node) == source:
            return "intra-site default"
        return "estimated"

    def _measured_between(self, source: str, node: str) -> bool:
        """Whether ``rtt_from(source, [node])`` comes from a measurement."""
        if self._site_nodes.get(source):
            # A node of the site itself: measured when it measured a fellow member
            # (else it got the INTRA_SITE_MS default).
            source_ids = {self._index[m] for m in self._site_nodes[source]}
        else:
            source_ids = {self._index[source]} if source in self._index else set()
        i = self._index.get(node)
        oldest = self.now - self.max_age
        return i is not None and any(at >= oldest for b, (_, at) in self._measured[i].items()
                                     if b in source_ids)


def _refusal(node: str, target: str, value: float, count: int) -> str:
    if count >= MAX_TARGETS:
        return f"rtt_ms[{target!r}]: more than {MAX_TARGETS} targets in one report"
    if target == node:
        return f"rtt_ms[{target!r}]: a node's RTT to itself"
    if not NODE_ID_RE.match(target):
        return f"rtt_ms[{target!r}]: not a node or landmark name"
    if not 0 < value <= MAX_RTT_MS:
        return f"rtt_ms[{target!r}]={value:g}: not in (0, {MAX_RTT_MS:g}] ms"
    return ""


def _rounded(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 3)


def _nanmedian_columns(stack: FloatArray) -> FloatArray:
    """Median of each column ignoring nan; nan where a column has no value
    (numpy's nanmedian warns on those, and they are the normal case here)."""
    ordered = np.sort(stack, axis=0)  # nan sorts last
    count = np.sum(~np.isnan(stack), axis=0)
    low = np.clip((count - 1) // 2, 0, None)
    high = np.clip(count // 2, 0, stack.shape[0] - 1)
    cols = np.arange(stack.shape[1])
    out = (ordered[low, cols] + ordered[high, cols]) / 2
    out[count == 0] = np.nan
    return np.asarray(out, dtype=np.float64)
