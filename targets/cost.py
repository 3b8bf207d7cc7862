"""The cost record of a graph: operations and bytes per node at batch 1, as a manifest carries it.

`compiler.passes.cost` computes it from an ONNX graph; `profiles.estimate` turns it into latency and
energy for a target. One multiply-accumulate counts as two operations, as datasheets count them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable


@dataclass(frozen=True)
class NodeCost:
    node: str
    op: str
    ops: int  # arithmetic operations (MAC = 2)
    bytes: int  # inputs + outputs + weights read or written
    weight_bytes: int
    compute_dtype: str  # "fp32", "fp16", "int8", "int4"


@dataclass(frozen=True)
class GraphCost:
    nodes: tuple[NodeCost, ...]
    # derived from the nodes; written for a reader of the manifest, recomputed when read
    batch: int = field(init=False, default=1)
    total_ops: int = field(init=False, default=0)
    total_bytes: int = field(init=False, default=0)
    weight_bytes: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "nodes", tuple(self.nodes))
        object.__setattr__(self, "total_ops", sum(n.ops for n in self.nodes))
        object.__setattr__(self, "total_bytes", sum(n.bytes for n in self.nodes))
        object.__setattr__(self, "weight_bytes", sum(n.weight_bytes for n in self.nodes))

    @staticmethod
    def of(nodes: Iterable[NodeCost]) -> "GraphCost":
        return GraphCost(tuple(nodes))
