"""The mixed-state presentation of a process (the entropies it gives are in :mod:`groundtruth.entropy`).

Mixed states are the beliefs reachable from the prior by observing tokens (Shai et al. 2024; the
mixed-state presentation of computational mechanics). They are enumerated level by level: each new
level applies every token to the beliefs first seen at the previous level, and beliefs equal after
rounding to ``decimals`` are merged. The result is a sparse transition graph (edge lists, never a dense
N × N matrix); merged beliefs are expanded once, so a finite presentation (RRXOR's 36 states) closes.

Per-level *masses* (the probability of being in each mixed state after L tokens) and per-level
*counts* (how many token sequences of length L with positive probability end there) are propagated
along the edges, which gives the tree size, block entropies and myopic entropies without enumerating
sequences one by one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from groundtruth.checks import check_int

if TYPE_CHECKING:  # the sampler in groundtruth.hmm walks these graphs, so this module cannot import it
    from groundtruth.hmm import HMM

_HASH = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93], dtype=np.uint64)


def _hash_rows(keys: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each int64 row (collisions are checked by the caller)."""
    k = keys.view(np.uint64)
    h = np.zeros(len(k), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for c in range(k.shape[1]):
            h = (h ^ k[:, c]) * _HASH[c % len(_HASH)]
            h ^= h >> np.uint64(29)
    return h


def _group(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted distinct values, one representative index for each, and each element's group."""
    order = np.argsort(values)
    ordered = values[order]
    starts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]]))
    inverse = np.empty(len(values), np.int64)
    inverse[order] = np.cumsum(np.concatenate([[True], ordered[1:] != ordered[:-1]])) - 1
    return ordered[starts], order[starts], inverse


def shannon_entropy(p: np.ndarray) -> np.ndarray:
    """Shannon entropy in nats along the last axis."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log(p), 0.0).sum(-1)


class _Rows:
    """A growable int64 row buffer (amortised doubling), so each level appends without a full copy."""

    def __init__(self, first: np.ndarray):
        self.data, self.n = first.copy(), len(first)

    def __len__(self) -> int:
        return self.n

    def extend(self, rows: np.ndarray) -> None:
        if self.n + len(rows) > len(self.data):
            grown = np.empty((max(2 * len(self.data), self.n + len(rows)), self.data.shape[1]), np.int64)
            grown[: self.n] = self.data[: self.n]
            self.data = grown
        self.data[self.n : self.n + len(rows)] = rows
        self.n += len(rows)


@dataclass(frozen=True)
class MixedStateGraph:
    """Distinct mixed states and the token transitions between them.

    Node 0 is the prior. ``depth[n]`` is the first level at which belief ``n`` appears; nodes first
    seen below ``max_depth`` are expanded. Edge ``e`` goes from ``src[e]`` on ``token[e]`` to ``dst[e]``
    with probability ``prob[e] = P(token | belief of src)``. ``next[n, x]`` is the node reached from
    ``n`` on token ``x`` (-1 where the token is impossible or ``n`` was not expanded).
    """

    hmm: HMM
    beliefs: np.ndarray  # [N, n_states]
    depth: np.ndarray  # [N]
    src: np.ndarray  # [E]
    token: np.ndarray  # [E]
    dst: np.ndarray  # [E]
    prob: np.ndarray  # [E]
    next: np.ndarray  # [N, n_tokens]
    max_depth: int
    closed: bool  # True when no new belief appeared at the last level: the presentation is complete

    def __len__(self) -> int:
        return len(self.beliefs)

    def n_distinct(self, decimals: int) -> int:
        """Number of distinct beliefs after rounding to ``decimals`` places."""
        return len(np.unique(np.round(self.beliefs, decimals), axis=0))

    def _propagate(self, start: np.ndarray, weights: np.ndarray, levels: int) -> list[np.ndarray]:
        out = [start]
        for _ in range(levels):
            out.append(np.bincount(self.dst, weights=out[-1][self.src] * weights, minlength=len(self)))
        return out

    def _levels(self, levels: int | None) -> int:
        if levels is None:
            return self.max_depth
        check_int("levels", levels, minimum=0)
        if levels > self.max_depth and not self.closed:
            raise ValueError(f"levels={levels} exceeds max_depth={self.max_depth} of an open presentation")
        return levels

    def level_counts(self, levels: int | None = None) -> np.ndarray:
        """Token sequences of each length ``0..levels`` with positive probability (the tree's levels)."""
        start = np.zeros(len(self))
        start[0] = 1.0
        ones = np.ones(len(self.src))
        return np.array([c.sum() for c in self._propagate(start, ones, self._levels(levels))])

    def level_masses(self, levels: int | None = None) -> list[np.ndarray]:
        """``masses[L][n]``: probability that the belief after ``L`` tokens is node ``n``."""
        start = np.zeros(len(self))
        start[0] = 1.0
        return self._propagate(start, self.prob, self._levels(levels))

    def myopic_entropies(self, levels: int | None = None) -> np.ndarray:
        """``h[L] = H(X_{L+1} | X_1..X_L)`` in nats for ``L = 0..levels``: the best achievable
        expected cross-entropy for the next token after ``L`` tokens."""
        node_entropy = shannon_entropy(self.hmm.next_token_probs(self.beliefs))
        return np.array([m @ node_entropy for m in self.level_masses(levels)])


def mixed_state_presentation(
    hmm: HMM, max_depth: int, *, decimals: int = 10, max_nodes: int = 20_000_000, truncate: bool = False
) -> MixedStateGraph:
    """Enumerate the mixed states reachable within ``max_depth`` tokens, merging beliefs equal to
    ``decimals`` places. Stops early when a level adds no new belief (``closed``). A level that would
    pass ``max_nodes`` raises a ``ValueError``, or with ``truncate`` ends the enumeration before it."""
    check_int("max_depth", max_depth, minimum=0)
    check_int("decimals", decimals, minimum=0)
    scale = 10.0**decimals
    T, v, s = hmm.T, hmm.n_tokens, hmm.n_states
    beliefs, depth = [hmm.initial[None, :]], [np.zeros(1, np.int64)]
    keys = _Rows(np.rint(hmm.initial[None, :] * scale).astype(np.int64))
    hashes = _hash_rows(keys.data[:1])  # sorted hashes of known nodes ...
    ids = np.zeros(1, np.int64)  # ... and their node ids
    frontier, frontier_beliefs = np.zeros(1, np.int64), hmm.initial[None, :]
    src, tok, dst, prob = [], [], [], []
    closed = False
    for level in range(1, max_depth + 1):
        if len(keys) + v * len(frontier) > max_nodes:
            if not truncate:
                raise ValueError(f"more than max_nodes={max_nodes} mixed states by depth {level}; lower max_depth")
            max_depth = level - 1
            break
        unnorm = np.matmul(frontier_beliefs[None], T)  # [V, n, S]
        p = unnorm.sum(-1)
        possible = p > 0
        if possible.all():
            t_idx = np.repeat(np.arange(v), len(frontier))
            n_idx = np.tile(np.arange(len(frontier)), v)
            p = p.reshape(-1)
            new = unnorm.reshape(-1, s) / p[:, None]
        else:
            t_idx, n_idx = np.nonzero(possible)
            p = p[t_idx, n_idx]
            new = unnorm[t_idx, n_idx] / p[:, None]
        new_keys = np.rint(new * scale).astype(np.int64)
        uniq, rep, inverse = _group(_hash_rows(new_keys))
        at = np.searchsorted(hashes, uniq)
        pos = np.minimum(at, len(hashes) - 1)
        found = hashes[pos] == uniq
        target = np.where(found, ids[pos], -1)
        is_fresh_row = np.zeros(len(new_keys), bool)
        is_fresh_row[rep[~found]] = True
        fresh_rows = np.flatnonzero(is_fresh_row)  # new nodes numbered in order of first appearance
        new_ids = len(keys) + np.arange(len(fresh_rows))
        target[inverse[fresh_rows]] = new_ids
        keys.extend(np.take(new_keys, fresh_rows, axis=0))
        at = at[~found]  # insert the sorted new hashes in place: O(N), no sort
        hashes, ids = np.insert(hashes, at, uniq[~found]), np.insert(ids, at, target[~found])
        target = target[inverse]
        if not np.array_equal(np.take(keys.data, target, axis=0), new_keys):
            raise RuntimeError("hash collision while merging mixed states; use a different decimals")
        src.append(frontier[n_idx])
        tok.append(t_idx)
        dst.append(target)
        prob.append(p)
        frontier, frontier_beliefs = new_ids, np.take(new, fresh_rows, axis=0)
        beliefs.append(frontier_beliefs)
        depth.append(np.full(len(fresh_rows), level, np.int64))
        if len(fresh_rows) == 0:
            closed = True
            break
    n_nodes = len(keys)
    src_a, tok_a, dst_a = (np.concatenate(a) if a else np.zeros(0, np.int64) for a in (src, tok, dst))
    prob_a = np.concatenate(prob) if prob else np.zeros(0)
    nxt = np.full((n_nodes, v), -1, np.int64)
    nxt[src_a, tok_a] = dst_a
    return MixedStateGraph(
        hmm=hmm,
        beliefs=np.concatenate(beliefs).reshape(-1, s),
        depth=np.concatenate(depth),
        src=src_a,
        token=tok_a,
        dst=dst_a,
        prob=prob_a,
        next=nxt,
        max_depth=max_depth,
        closed=closed,
    )
