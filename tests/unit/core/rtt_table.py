"""Round-trip times for scheduler unit tables: a plain table, where an absent pair
is unknown (``nan``), so a test states exactly what the scheduler sees. The
controller's own source (federation.latency.RttMatrix) would estimate the gaps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray


class TableRtt:
    """RTTs from a plain table: (source, node) -> ms; absent pairs are unknown."""

    def __init__(self, table: Mapping[tuple[str, str], float]) -> None:
        self.table = table

    def rtt_from(self, source: str, nodes: Sequence[str]) -> NDArray[np.float64]:
        return np.array([self.table.get((source, n), np.nan) for n in nodes], dtype=np.float64)
