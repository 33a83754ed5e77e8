"""Failover rules per deployment: when a replica on an unreachable node is
replaced, how a singleton waits for its agent to fence itself, and how many
replacements may start per second. Pure: ``now`` is passed in.

    node out of contact ──▶ grace (+ disconnectTolerance) over? ──▶ singleton?
        no: keep it                                                  no: replace
                                              yes: self-fence deadline passed or
                                                   operator confirmed? ──▶ replace

See docs/failover.md for the whole model.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from federation.inventory import Node
from policies.spec import Failover

# Seconds the controller waits past a singleton's fence deadline before it starts
# the replacement: covers the agent's fence check period, the runtime stop and
# scheduling jitter on both sides.
FENCE_MARGIN = 3.0
# An agent measures broker contact by the echo of its own capacity reports, so it
# cannot tell silence shorter than a few report intervals from a partition.
FENCE_MIN_INTERVALS = 3.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    replace: bool
    reason: str


def replace_after(f: Failover, default_grace: float) -> tuple[float, str]:
    """Seconds out of contact after which a replica is replaced, and the rule, in the
    words of the policy (``failover.grace 30s + disconnectTolerance 1m``)."""
    if "grace" in f.set_fields:
        grace, rule = f.grace.total_seconds(), f"failover.grace {f.grace.total_seconds():g} s"
    else:
        grace, rule = default_grace, f"the controller's grace of {default_grace:g} s"
    tolerance = f.disconnect_tolerance.total_seconds()
    if tolerance > 0:
        rule += f" + disconnectTolerance {tolerance:g} s"
    return grace + tolerance, rule


def fence_after(f: Failover, default_grace: float) -> float | None:
    """Seconds without the broker after which the agent stops a singleton itself; None
    for other deployments. It is the replacement delay itself: the agent gives up the
    slot when the controller would otherwise replace it, and the controller waits
    FENCE_MARGIN more (measured from the node's last message) before replacing it."""
    return replace_after(f, default_grace)[0] if f.singleton else None


def fenced_by(node: Node, fence: float) -> float:
    """When the agent of ``node`` has stopped a singleton with fence time ``fence``
    for sure, counted from the last message the controller got from it."""
    interval = node.capacity.interval if node.capacity else 5.0
    return node.last_seen + max(fence, FENCE_MIN_INTERVALS * interval) + FENCE_MARGIN


def verdict(f: Failover, node: Node, now: float, default_grace: float) -> Verdict:
    """Whether the replica of a deployment with failover rules ``f`` on the non-Ready
    ``node`` is replaced now, and why (or why not yet)."""
    if node.confirmed_lost:
        return Verdict(replace=True, reason=f"node {node.name} confirmed lost by an operator")
    if node.unreachable_since is None:
        return Verdict(replace=False, reason=f"node {node.name} is {node.state.value} but in "
                       "contact: its replicas stay")
    wait, rule = replace_after(f, default_grace)
    out = now - node.unreachable_since
    if out < wait:
        return Verdict(replace=False, reason=f"node {node.name} out of contact for {out:.1f} s; "
                       f"replaced after {wait:g} s ({rule})")
    why = f"node {node.name} out of contact for {out:.1f} s ({rule})"
    if f.singleton:
        fence = fence_after(f, default_grace)
        assert fence is not None
        due = fenced_by(node, fence)
        if now < due:
            return Verdict(replace=False, reason=f"{why}; singleton: waiting {due - now:.1f} s "
                           f"more for its agent to stop it (fences after {fence:g} s without "
                           "the broker), or for edgefed confirm-lost")
        return Verdict(replace=True, reason=f"{why}; singleton: its agent has stopped it "
                       f"(fences after {fence:g} s without the broker)")
    return Verdict(replace=True, reason=why)


@dataclass(frozen=True, slots=True, kw_only=True)
class Throttle:
    """A token bucket for failover replacements: ``rate`` per second on average,
    ``burst`` at once. Losing a big site then does not start every replacement in
    the same second on the rest of the federation."""

    rate: float = 20.0
    burst: float = 40.0
    tokens: float = 40.0
    updated_at: float | None = None

    def take(self, wanted: int, now: float) -> tuple[int, Throttle]:
        """How many of ``wanted`` replacements may start now, and the bucket after."""
        tokens = self.tokens
        if self.updated_at is not None:
            tokens = min(self.burst, tokens + max(0.0, now - self.updated_at) * self.rate)
        granted = min(wanted, int(tokens + 1e-9))
        return granted, replace(self, tokens=tokens - granted, updated_at=now)

    def give_back(self, count: int) -> Throttle:
        """Return tokens taken for replacements that found no node: a replica nothing
        can take must not hold back the ones that can be placed."""
        return replace(self, tokens=min(self.burst, self.tokens + count))

    def next_token(self, now: float) -> float:
        """When at least one replacement may start again."""
        if self.tokens >= 1 or self.rate <= 0:
            return now
        return now + (1 - self.tokens) / self.rate
