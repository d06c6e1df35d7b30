"""Exact entropies of a process from its mixed-state presentation: myopic and block entropies, the
best achievable next-token loss per position, and the entropy rate."""

from __future__ import annotations

import numpy as np
from scipy.sparse.csgraph import connected_components

from groundtruth.checks import check_int
from groundtruth.hmm import HMM
from groundtruth.mixed_state import MixedStateGraph, mixed_state_presentation, shannon_entropy


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
        return float(hmm.initial @ shannon_entropy(hmm.T.sum(axis=2).T))
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
