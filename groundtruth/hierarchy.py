"""Feature hierarchies: a forest of parent/child features where a child fires only with its parent.

Trees are laid out breadth first over the most frequent features: features ``0 .. n_roots-1`` are
roots, the next ``n_roots * branching`` are their children, and so on (the SynthSAEBench layout).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from groundtruth._checks import check_int
from groundtruth._serial import serializable
from groundtruth.correlation import sort_keys


@serializable
@dataclass(frozen=True)
class Hierarchy:
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

        ``keys`` holds the firing free features; ``firing.fire(rows, cols, state, generator)`` draws
        whether given (sample, feature) cells fire, from the same per-sample copula state, so gating
        costs work proportional to the parents that fire rather than to every child of every sample.
        """
        found, frontier = [keys], keys
        for _ in range(self.depth):
            children = self.first_child.index_select(0, frontier % n_features)
            has = torch.nonzero(children >= 0).flatten()
            if has.numel() == 0:
                break
            first = (
                frontier.index_select(0, has)
                - frontier.index_select(0, has) % n_features
                + children.index_select(0, has)
            )
            child_keys = (first.unsqueeze(1) + torch.arange(self.branching)).flatten()
            fired = child_keys[firing.fire(child_keys // n_features, child_keys % n_features, state, generator)]
            if self.mutually_exclusive:
                fired = self._one_per_parent(fired, n_features, generator)
            found.append(fired)
            frontier = fired
        return sort_keys(torch.cat(found))

    def _one_per_parent(self, keys: torch.Tensor, n_features: int, generator: torch.Generator) -> torch.Tensor:
        """Keep one uniformly chosen key per run of siblings (same sample, same parent).

        ``keys`` must hold each parent's children contiguously, as :meth:`expand` builds them, so a
        group is a run and its winner is the run's start plus a uniform offset below its length."""
        if keys.numel() == 0:
            return keys
        cols = keys % n_features
        group = keys - cols + self.parent.index_select(0, cols)  # (row, parent) identifies the siblings
        new = torch.ones_like(group, dtype=torch.bool)
        new[1:] = group[1:] != group[:-1]
        starts = torch.nonzero(new).flatten()
        lengths = torch.diff(starts, append=torch.tensor([keys.numel()]))
        offset = (torch.rand(starts.numel(), generator=generator, dtype=torch.float64) * lengths).long()
        return keys.index_select(0, starts + torch.minimum(offset, lengths - 1))

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
