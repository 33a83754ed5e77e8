"""Real network faults for drills and tests.

- :class:`~federation.drill.faults.netns.SiteNamespace`: a site in its own network
  namespace behind a veth pair; cut it off (nft drop), take its link down, shape
  its bandwidth (tbf), run processes inside it.
- :class:`~federation.drill.faults.proxy.FaultProxy`: a TCP proxy with live-adjustable
  latency, jitter, stalls, bandwidth limit, resets, refusal and a blackhole.

A namespace cannot reach the broker on 127.0.0.1 (loopback is per namespace): put
a :class:`FaultProxy` on the namespace's host address in front of the broker and
point the site's agents at it (:meth:`SiteNamespace.bridge`).
"""

from federation.drill.faults.netns import NetFaultError, SiteNamespace, leftovers
from federation.drill.faults.proxy import FaultProxy, ProxyStats

__all__ = ["FaultProxy", "NetFaultError", "ProxyStats", "SiteNamespace", "leftovers"]
