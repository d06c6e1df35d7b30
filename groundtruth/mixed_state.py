"""The mixed-state presentation of a process, and the entropies it gives exactly.

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

import numpy as np
from scipy.sparse.csgraph import connected_components

from groundtruth._checks import check_int
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


def _entropy(p: np.ndarray) -> np.ndarray:
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
        node_entropy = _entropy(self.hmm.next_token_probs(self.beliefs))
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


def myopic_entropy(hmm: HMM, max_length: int) -> np.ndarray:
    """``h[L] = H(X_{L+1} | X_1..X_L)`` in nats for ``L = 0..max_length`` (exact, from the graph)."""
    return mixed_state_presentation(hmm, max_length).myopic_entropies()


def block_entropy(hmm: HMM, max_length: int) -> np.ndarray:
    """``H[L] = H(X_1..X_L)`` in nats for ``L = 0..max_length``."""
    h = myopic_entropy(hmm, max(max_length - 1, 0))
    return np.concatenate([[0.0], np.cumsum(h)])[: max_length + 1]


def optimal_loss(hmm: HMM, n_ctx: int) -> np.ndarray:
    """The lowest expected next-token cross-entropy (nats) at each position of an ``n_ctx`` context:
    position ``t`` (0-based) has seen ``t + 1`` tokens, so its floor is ``h[t + 1]``. For Mess3
    (0.05, 0.85) and ``n_ctx = 10`` the mean is 0.8025 nats (Shai et al. 2024)."""
    check_int("n_ctx", n_ctx)
    return myopic_entropy(hmm, n_ctx)[1:]


def entropy_rate(hmm: HMM, *, tol: float = 1e-7, max_nodes: int = 5_000_000) -> float:
    """The entropy rate in nats per token.

    Exact for a unifilar presentation started in a stationary distribution: ``Σᵢ πᵢ H(X | sᵢ)``. When
    the mixed-state presentation closes, it is itself unifilar and the same formula runs on its
    recurrent states. Otherwise the myopic entropy ``h[L]`` (which decreases to the rate) is followed
    until it changes by less than ``tol`` for 3 levels in a row (a single flat step can precede a
    drop, as in a non-unifilar RRXOR); a ``ValueError`` if ``max_nodes``
    mixed states do not suffice. A process made of disconnected parts
    (:func:`groundtruth.processes.mixture`) has the rates of its parts averaged by their prior weight.
    """
    n_parts, part = connected_components((hmm.transition > 0).astype(np.int8), directed=True, connection="weak")
    if n_parts > 1:
        rate = 0.0
        for c in range(n_parts):
            idx = np.flatnonzero(part == c)
            weight = hmm.initial[idx].sum()
            if weight > 0:
                sub = HMM(hmm.T[:, idx][:, :, idx], hmm.initial[idx] / weight, name=f"{hmm.name}[{c}]")
                rate += weight * entropy_rate(sub, tol=tol, max_nodes=max_nodes)
        return rate
    stationary = np.allclose(hmm.initial @ hmm.transition, hmm.initial, atol=1e-12)
    if hmm.is_unifilar() and stationary:
        return float(hmm.initial @ _entropy(hmm.T.sum(axis=2).T))
    graph = mixed_state_presentation(hmm, 10_000, max_nodes=max_nodes, truncate=True)
    if graph.closed:
        recurrent = _recurrent_presentation(graph)
        if recurrent is not None:
            return entropy_rate(recurrent)
    h = graph.myopic_entropies()
    gaps = np.abs(np.diff(h))
    settled = np.convolve(gaps < tol, np.ones(3), mode="valid") == 3  # 3 small changes in a row
    if not settled.any():
        raise ValueError(
            f"myopic entropy of {hmm.name!r} did not settle to tol={tol} within {len(h) - 1} tokens "
            f"(last change {gaps[-1]:.2e}); raise max_nodes or tol"
        )
    return float(h[np.flatnonzero(settled)[0] + 3])


def _recurrent_presentation(graph: MixedStateGraph, max_states: int = 2000) -> HMM | None:
    """The recurrent mixed states of a closed presentation as a unifilar HMM, when they form one
    class of at most ``max_states`` states (a dense ``T`` is built); ``None`` otherwise."""
    from scipy.sparse import coo_matrix

    n = len(graph)
    adjacency = coo_matrix((np.ones(len(graph.src)), (graph.src, graph.dst)), shape=(n, n)).tocsr()
    _, label = connected_components(adjacency, directed=True, connection="strong")
    leaves = np.setdiff1d(label, label[graph.src[label[graph.src] != label[graph.dst]]])  # no edge out
    if len(leaves) != 1 or (label == leaves[0]).sum() > max_states:
        return None
    nodes = np.flatnonzero(label == leaves[0])
    index = np.full(n, -1)
    index[nodes] = np.arange(len(nodes))
    inside = index[graph.src] >= 0
    T = np.zeros((graph.hmm.n_tokens, len(nodes), len(nodes)))
    T[graph.token[inside], index[graph.src[inside]], index[graph.dst[inside]]] = graph.prob[inside]
    return HMM(T, name=f"recurrent mixed states of {graph.hmm.name}")
