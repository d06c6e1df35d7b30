"""A zoo of hidden-Markov processes, random ones from a seed, and ways to combine them.

Each builder returns an :class:`~groundtruth.hmm.HMM` with ``T[x, i, j] = P(x, s_j | s_i)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.sparse.csgraph import connected_components

from groundtruth.checks import check_int, check_real
from groundtruth.hmm import HMM, check_distribution


def mess3(x: float = 0.15, alpha: float = 0.6) -> HMM:
    """Mess3 (Marzen & Crutchfield 2017): three states that stay put with probability 1 - 2x and
    otherwise hop; the state entered emits its own token with probability α and each other token
    with (1 - α)/2. Shai et al. (2024) use (x, α) = (0.05, 0.85); (0.15, 0.6) is the common default.
    Its mixed states form an infinite fractal in the 2-simplex."""
    check_real("x", x, 0.0, 0.5)
    check_real("alpha", alpha, 0.0, 1.0)
    hop = np.full((3, 3), x) + np.eye(3) * (1 - 3 * x)
    emit = np.full((3, 3), (1 - alpha) / 2) + np.eye(3) * (alpha - (1 - alpha) / 2)  # emit[x, j]
    return HMM(emit[:, None, :] * hop[None, :, :], name=f"mess3(x={x:g}, alpha={alpha:g})")


def rrxor(p1: float = 0.5, p2: float = 0.5) -> HMM:
    """Random-random-XOR: two random bits (1 with probability p1, then p2) followed by their XOR,
    repeated. Five states (start, after a 0, after a 1, XOR is 1, XOR is 0); 36 mixed states."""
    check_real("p1", p1, 0.0, 1.0)
    check_real("p2", p2, 0.0, 1.0)
    start, s0, s1, true, false = range(5)
    T = np.zeros((2, 5, 5))
    T[0, start, s0], T[1, start, s1] = 1 - p1, p1
    T[0, s0, false], T[1, s0, true] = 1 - p2, p2
    T[0, s1, true], T[1, s1, false] = 1 - p2, p2
    T[1, true, start] = 1.0
    T[0, false, start] = 1.0
    return HMM(T, name=f"rrxor(p1={p1:g}, p2={p2:g})")


def z1r(p: float = 0.5) -> HMM:
    """Zero-one-random: the period-3 word 0, 1, then a random bit (0 with probability ``p``)."""
    check_real("p", p, 0.0, 1.0)
    T = np.zeros((2, 3, 3))
    T[0, 0, 1] = 1.0
    T[1, 1, 2] = 1.0
    T[0, 2, 0], T[1, 2, 0] = p, 1 - p
    return HMM(T, name=f"z1r(p={p:g})")


def no_consecutive_ones(p: float = 0.5) -> HMM:
    """Binary sequences without two 1s in a row: after a 0, emit 1 with probability ``p``; after a
    1, emit 0. Entropy rate H(p) / (1 + p) nats."""
    check_real("p", p, 0.0, 1.0, low_open=True)
    T = np.zeros((2, 2, 2))
    T[0, 0, 0], T[1, 0, 1] = 1 - p, p
    T[0, 1, 0] = 1.0
    return HMM(T, name=f"no_consecutive_ones(p={p:g})")


def golden_mean(p: float = 0.5) -> HMM:
    """The Golden Mean process (Crutchfield & Feldman 2003): no two 0s in a row, a 0 emitted with
    probability ``p`` after a 1. It is :func:`no_consecutive_ones` with the tokens swapped."""
    return HMM(no_consecutive_ones(p).T[::-1], name=f"golden_mean(p={p:g})")


def even(p: float = 0.5) -> HMM:
    """The Even process: blocks of 1s of even length separated by 0s. From the free state emit 0
    (stay) with probability 1 - p or a 1 that must be followed by another 1."""
    check_real("p", p, 0.0, 1.0, low_open=True)
    T = np.zeros((2, 2, 2))
    T[0, 0, 0], T[1, 0, 1] = 1 - p, p
    T[1, 1, 0] = 1.0
    return HMM(T, name=f"even(p={p:g})")


def iid(probs: Sequence[float] = (0.5, 0.5)) -> HMM:
    """Independent tokens with the given probabilities: one hidden state."""
    probs = np.asarray(probs, dtype=np.float64)
    return HMM(probs[:, None, None], name=f"iid({', '.join(f'{q:g}' for q in probs)})")


def random_hmm(n_states: int, n_tokens: int, seed: int, concentration: float = 1.0) -> HMM:
    """A random HMM: each state's joint distribution over (token, next state) is Dirichlet."""
    check_int("n_states", n_states)
    check_int("n_tokens", n_tokens)
    check_real("concentration", concentration, 0.0, low_open=True)
    rng = np.random.default_rng(seed)
    rows = rng.dirichlet(np.full(n_tokens * n_states, concentration), size=n_states)
    return HMM(rows.reshape(n_states, n_tokens, n_states).transpose(1, 0, 2), name=f"random_hmm(seed={seed})")


def random_epsilon_machine(n_states: int, n_tokens: int, seed: int, max_tries: int = 1000) -> HMM:
    """A random ε-machine: unifilar (state and token fix the next state), strongly connected and
    minimal (no two states predict the same future). Drawn by rejection from random unifilar maps."""
    check_int("n_states", n_states)
    check_int("n_tokens", n_tokens, minimum=2 if n_states > 1 else 1)
    rng = np.random.default_rng(seed)
    for _ in range(max_tries):
        allowed = rng.random((n_states, n_tokens)) < 0.75
        allowed[np.arange(n_states), rng.integers(n_tokens, size=n_states)] = True
        dest = rng.integers(n_states, size=(n_states, n_tokens))
        emit = rng.dirichlet(np.ones(n_tokens), size=n_states) * allowed
        emit /= emit.sum(1, keepdims=True)
        T = np.zeros((n_tokens, n_states, n_states))
        for i in range(n_states):
            T[np.arange(n_tokens), i, dest[i]] = emit[i]
        adjacency = (T.sum(0) > 0).astype(np.int8)
        if connected_components(adjacency, directed=True, connection="strong")[0] == 1 and _minimal(emit, dest):
            return HMM(T, name=f"random_epsilon_machine(seed={seed})")
    raise ValueError(f"no ε-machine with {n_states} states and {n_tokens} tokens found in {max_tries} tries")


def _minimal(emit: np.ndarray, dest: np.ndarray) -> bool:
    """Moore partition refinement: a unifilar machine is minimal when every state ends in its own class."""
    rounded = np.round(emit, 12)
    _, label = np.unique(rounded, axis=0, return_inverse=True)
    label = label.ravel()
    while True:
        signature = np.concatenate([label[:, None], np.where(emit > 0, label[dest], -1)], axis=1)
        _, refined = np.unique(signature, axis=0, return_inverse=True)
        refined = refined.ravel()
        if refined.max() == label.max():
            return bool(refined.max() + 1 == len(label))
        label = refined


def mixture(processes: Sequence[HMM], weights: Sequence[float] | None = None) -> HMM:
    """A non-ergodic mixture: pick one process (with ``weights``) and emit from it forever. The
    belief then also tracks which component is running. Components must share a vocabulary size."""
    if len(processes) < 1:
        raise ValueError("mixture needs at least one process")
    v = processes[0].n_tokens
    if any(p.n_tokens != v for p in processes):
        raise ValueError(f"mixture components must share n_tokens, got {[p.n_tokens for p in processes]}")
    w = (
        np.full(len(processes), 1 / len(processes))
        if weights is None
        else check_distribution("weights", weights, len(processes))
    )
    n = sum(p.n_states for p in processes)
    T, offset = np.zeros((v, n, n)), 0
    for p in processes:
        T[:, offset : offset + p.n_states, offset : offset + p.n_states] = p.T
        offset += p.n_states
    initial = np.concatenate([wi * p.initial for wi, p in zip(w, processes, strict=True)])
    return HMM(T, initial, name=f"mixture({', '.join(p.name for p in processes)})")


def product(*processes: HMM) -> HMM:
    """Independent processes run side by side; token ``(x1, x2, ...)`` is numbered row-major
    (``x1 * n2 + x2``), and so is the hidden state."""
    if len(processes) < 1:
        raise ValueError("product needs at least one process")
    T, initial = processes[0].T, processes[0].initial
    for p in processes[1:]:
        v, s = T.shape[0] * p.n_tokens, T.shape[1] * p.n_states
        T = np.einsum("aij,bkl->abikjl", T, p.T).reshape(v, s, s)
        initial = np.kron(initial, p.initial)
    return HMM(T, initial, name=f"product({', '.join(p.name for p in processes)})")


PROCESSES: dict[str, Callable[[], HMM]] = {
    "mess3": lambda: mess3(0.05, 0.85),
    "mess3-common": lambda: mess3(0.15, 0.6),
    "rrxor": rrxor,
    "z1r": z1r,
    "even": even,
    "golden-mean": golden_mean,
    "no-consecutive-ones": no_consecutive_ones,
}


def process(name: str) -> HMM:
    """A named process from :data:`PROCESSES` (``mess3`` is the paper's (0.05, 0.85))."""
    if name not in PROCESSES:
        raise ValueError(f"unknown process {name!r}; choose one of {sorted(PROCESSES)}")
    return PROCESSES[name]()
