"""Feature hierarchies: a forest of parent/child features where a child fires only with its parent.

Trees are laid out breadth first over the most frequent features: features ``0 .. n_roots-1`` are
roots, the next ``n_roots * branching`` are their children, and so on (the SynthSAEBench layout).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from groundtruth.checks import check_int
from groundtruth.config import Config
from groundtruth.correlation import sort_keys


@dataclass(frozen=True)
class Hierarchy(Config):
    """``n_roots`` trees, each node with ``branching`` children, ``depth`` levels below the root.

    ``mutually_exclusive``: at most one child of a parent fires (a random one of those that would).
    ``scale_children``: a child's coefficient is multiplied by ``parent / mean(parent)``.
    ``compensate``: raise children's probabilities so their marginal rate is close to the schedule's
    (divide by the parent's probability, times one plus the expected number of rival siblings).
    """

    n_roots: int
    branching: int
    depth: int
    mutually_exclusive: bool = False
    scale_children: bool = False
    compensate: bool = False

    def __post_init__(self) -> None:
        check_int("Hierarchy.n_roots", self.n_roots)
        check_int("Hierarchy.branching", self.branching)
        check_int("Hierarchy.depth", self.depth)

    @property
    def n_nodes(self) -> int:
        return self.n_roots * sum(self.branching**k for k in range(self.depth + 1))


@dataclass(frozen=True)
class Forest:
    """The concrete forest over features: ``parent[i]`` (-1 for roots and free features) and
    ``level[i]`` (0 for roots, -1 for features outside every tree)."""

    parent: torch.Tensor
    level: torch.Tensor
    first_child: torch.Tensor  # children of j are first_child[j] .. first_child[j] + branching - 1
    branching: int
    mutually_exclusive: bool
    scale_children: bool

    @classmethod
    def build(cls, spec: Hierarchy, n_features: int) -> Forest:
        if spec.n_nodes > n_features:
            raise ValueError(
                f"hierarchy needs {spec.n_nodes} features ({spec.n_roots} roots, branching "
                f"{spec.branching}, depth {spec.depth}) but the model has n_features={n_features}"
            )
        parent = torch.full((n_features,), -1, dtype=torch.int64)
        level = torch.full((n_features,), -1, dtype=torch.int64)
        first_child = torch.full((n_features,), -1, dtype=torch.int64)
        level[: spec.n_roots] = 0
        start, width = 0, spec.n_roots
        for depth in range(1, spec.depth + 1):
            children = torch.arange(start + width, start + width + width * spec.branching)
            parents = torch.arange(start, start + width)
            parent[children] = parents.repeat_interleave(spec.branching)
            first_child[parents] = children[:: spec.branching]
            level[children] = depth
            start, width = start + width, width * spec.branching
        return cls(parent, level, first_child, spec.branching, spec.mutually_exclusive, spec.scale_children)

    @property
    def depth(self) -> int:
        return int(self.level.max()) if self.level.numel() else 0

    def compensate(self, p: torch.Tensor) -> torch.Tensor:
        """Per-feature probabilities raised so that gated children fire about as often as ``p``."""
        out = p.clone().double()
        child = self.parent >= 0
        pp = p.double()[self.parent[child]]
        factor = 1.0 / pp.clamp(min=1e-12)
        if self.mutually_exclusive:
            sibling_sum = torch.zeros_like(out).index_add_(0, self.parent[child], p.double()[child])
            rivals = (sibling_sum[self.parent[child]] - p.double()[child]) / pp.clamp(min=1e-12)
            factor = factor * (1 + rivals)
        out[child] = (out[child] * factor).clamp(max=1.0)
        return out

    @property
    def free(self) -> torch.Tensor:
        """Features whose firing does not depend on a parent (roots and features outside trees)."""
        return self.parent < 0

    def expand(self, keys: torch.Tensor, firing, state, n_features: int, generator: torch.Generator) -> torch.Tensor:
        """Add the children that fire, level by level, drawing only the children of firing parents.

        ``keys`` holds the firing free features. A parent's children are consecutive features, so
        ``firing.fire_runs`` draws them as one run per firing parent, from the same per-sample copula
        state: gating costs work proportional to the parents that fire, not to every child of every sample.
        """
        found, frontier = [keys], keys
        for _ in range(self.depth):
            children = self.first_child.index_select(0, frontier % n_features)
            has = torch.nonzero(children >= 0).flatten()
            if has.numel() == 0:
                break
            parents, first = frontier.index_select(0, has), children.index_select(0, has)
            rows = parents // n_features
            fired = firing.fire_runs(rows, first, self.branching, state, generator)  # [parents, branching]
            if self.mutually_exclusive:
                fired = _one_per_run(fired, generator)
            frontier = ((rows * n_features + first)[:, None] + torch.arange(self.branching))[fired]
            found.append(frontier)
        return sort_keys(torch.cat(found))

    def scale(self, keys: torch.Tensor, values: torch.Tensor, mean: torch.Tensor, n_features: int) -> torch.Tensor:
        """Multiply each child's coefficient by its parent's coefficient over the parent's mean."""
        values = values.clone()
        cols = keys % n_features
        level = self.level.index_select(0, cols)
        for depth in range(1, self.depth + 1):  # parents first: a child scales by its scaled parent
            idx = torch.nonzero(level == depth).flatten()
            if idx.numel() == 0:
                continue
            child_cols = cols.index_select(0, idx)
            parent_cols = self.parent.index_select(0, child_cols)
            pos = torch.searchsorted(keys, keys.index_select(0, idx) - child_cols + parent_cols)
            values[idx] = values.index_select(0, idx) * values.index_select(0, pos) / mean.index_select(0, parent_cols)
        return values


def _one_per_run(fired: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Keep one uniformly chosen ``True`` per row of the ``[runs, width]`` mask ``fired``."""
    count = fired.sum(1, keepdim=True)
    pick = (torch.rand(count.shape, generator=generator, dtype=torch.float64) * count).long()
    return fired & (fired.cumsum(1) == pick + 1)
