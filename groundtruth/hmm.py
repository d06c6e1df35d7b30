"""Edge-emitting hidden Markov models with exact Bayesian beliefs over their hidden states.

A process is a tensor ``T[x, i, j] = P(token x, next state j | state i)``. The *belief* (mixed state)
after a prefix is the posterior over the hidden state given that prefix, starting from the prior
``initial``; Shai et al. (2024), "Transformers represent belief state geometry in their residual
stream", show that transformers trained on such processes represent it linearly.

Belief convention: ``beliefs[:, k]`` is the belief after the first ``k`` tokens, so the belief
*before* token ``t`` (0-based) is ``beliefs[:, t]`` and the belief *after* it is ``beliefs[:, t + 1]``.
A transformer's activation at position ``t`` has seen tokens ``0..t`` and is regressed on the belief
after token ``t``; that is what :attr:`ProcessBatch.latents` holds.

Everything is exact and in float64. Belief updates only use ``η T[x] / (η T[x] 1)``, which is also
the update of a generalized HMM (signed ``T``); only validation and hidden-state sampling assume
non-negative entries.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from groundtruth.checks import check_int
from groundtruth.latents import TokenBatch
from groundtruth.mixed_state import mixed_state_presentation
from groundtruth.threads import map_threads

_ATOL = 1e-9
_WALK_NODES = 1_000_000  # mixed states kept for belief look-ups while sampling
_CHUNK = 16_384  # sequences per sampling chunk: small enough to stay in cache


def _alias_table(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker's alias method (Vose's construction): draw ``c`` uniform in ``[0, K)`` and return
    ``floor(c)`` if ``frac(c) < accept[floor(c)]``, else ``alias[floor(c)]``."""
    k = len(p)
    scaled = p * k / p.sum()
    accept, alias = np.ones(k), np.arange(k)
    small = [i for i in range(k) if scaled[i] < 1]
    large = [i for i in range(k) if scaled[i] >= 1]
    while small and large:
        lo, hi = small.pop(), large.pop()
        accept[lo], alias[lo] = scaled[lo], hi
        scaled[hi] -= 1 - scaled[lo]
        (small if scaled[hi] < 1 else large).append(hi)
    return accept, alias


def check_distribution(name: str, p: np.ndarray, n: int) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if p.shape != (n,) or not np.isfinite(p).all() or (p < 0).any() or abs(p.sum() - 1) > _ATOL:
        raise ValueError(f"{name} must be a probability vector of length {n}, got {p.tolist()}")
    return p


class HMM:
    """An edge-emitting HMM ``T[x, i, j] = P(x, s_j | s_i)`` with prior ``initial`` over states.

    ``initial`` defaults to the stationary distribution, which must then be unique (an ergodic
    process); non-ergodic processes such as :func:`groundtruth.processes.mixture` pass their own.
    """

    def __init__(
        self,
        T: np.ndarray | torch.Tensor,
        initial: np.ndarray | None = None,
        *,
        name: str = "hmm",
        token_names: tuple[str, ...] | None = None,
    ):
        T = np.array(T.detach().cpu() if isinstance(T, torch.Tensor) else T, dtype=np.float64)
        if T.ndim != 3 or T.shape[1] != T.shape[2] or T.shape[0] < 1 or T.shape[1] < 1:
            raise ValueError(f"T must have shape [n_tokens, n_states, n_states], got {T.shape}")
        if not np.isfinite(T).all():
            raise ValueError("T contains NaN or infinite values")
        if (T < 0).any():
            i = np.argwhere(T < 0)[0]
            raise ValueError(f"T must be non-negative, got T{tuple(i.tolist())} = {T[tuple(i)]}")
        rows = T.sum(axis=(0, 2))
        if not np.allclose(rows, 1.0, atol=_ATOL, rtol=0):
            bad = int(np.argmax(np.abs(rows - 1)))
            raise ValueError(f"rows of sum_x T[x] must sum to 1, but state {bad} sums to {rows[bad]!r}")
        self.T = T
        self.n_tokens, self.n_states = T.shape[0], T.shape[1]
        self.name = name
        self.token_names = tuple(token_names) if token_names is not None else tuple(map(str, range(self.n_tokens)))
        if len(self.token_names) != self.n_tokens:
            raise ValueError(f"token_names has {len(self.token_names)} entries for {self.n_tokens} tokens")
        self.initial = self.stationary() if initial is None else check_distribution("initial", initial, self.n_states)
        self._T = torch.from_numpy(T)
        self._graph, self._graph_budget, self._alias_tables = None, 0, None

    def __repr__(self) -> str:
        return f"HMM({self.name!r}, n_tokens={self.n_tokens}, n_states={self.n_states})"

    @property
    def transition(self) -> np.ndarray:
        """The state-to-state Markov matrix ``sum_x T[x]``."""
        return self.T.sum(axis=0)

    def stationary(self) -> np.ndarray:
        """The unique stationary distribution π = π Σₓ T[x]; a ``ValueError`` if it is not unique."""
        a = self.transition.T - np.eye(self.n_states)
        _, s, vt = np.linalg.svd(a)
        null = int((s < 1e-10).sum())
        if null != 1:
            raise ValueError(f"process {self.name!r} has {null} stationary distributions (not ergodic); pass initial=")
        pi = np.abs(vt[-1])
        return pi / pi.sum()

    @property
    def label_names(self) -> tuple[str, ...]:
        """Names of the per-token latents, as every token source names its labels: ``belief[i]`` is the
        probability of hidden state ``i``."""
        return tuple(f"belief[{i}]" for i in range(self.n_states))

    def labels(self, tokens: torch.Tensor) -> torch.Tensor:
        """The latents of given sequences ``[b, t]``: the belief after each token ``[b, t, n_states]``, as
        :meth:`sample` gives them with its tokens (and as a game's ``labels`` gives its board)."""
        return self.filter(tokens)[0][:, 1:]

    def is_unifilar(self) -> bool:
        """Whether state and token determine the next state (an ε-machine-style presentation)."""
        return bool(((self.T > 0).sum(axis=2) <= 1).all())

    def next_token_probs(self, beliefs: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """``P(next token | belief)``, ``[..., n_states] -> [..., n_tokens]``."""
        if isinstance(beliefs, torch.Tensor):
            return torch.einsum("...i,xij->...x", beliefs.to(torch.float64), self._T)
        return np.einsum("...i,xij->...x", beliefs, self.T)

    def filter(self, tokens: torch.Tensor, prior: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact beliefs for a batch of sequences ``[b, t]`` (vectorised over the batch).

        Returns ``beliefs [b, t + 1, n_states]`` (``beliefs[:, k]`` after ``k`` tokens) and the log
        prefix probabilities ``[b, t + 1]`` in nats. A token of probability zero under the prefix
        raises a ``ValueError``.
        """
        return self._forward(tokens, prior, strict=True)

    def log_prob(self, tokens: torch.Tensor) -> torch.Tensor:
        """Log probability (nats) of each whole sequence ``[b, t] -> [b]``; ``-inf`` if impossible."""
        return self._forward(tokens, None, strict=False)[1][:, -1]

    def _forward(self, tokens: torch.Tensor, prior: np.ndarray | None, strict: bool):
        tokens = self._check_tokens(tokens)
        b, t = tokens.shape
        prior = self.initial if prior is None else check_distribution("prior", prior, self.n_states)
        beliefs = torch.empty(b, t + 1, self.n_states, dtype=torch.float64)
        logp = torch.zeros(b, t + 1, dtype=torch.float64)
        beliefs[:, 0] = torch.from_numpy(prior)
        for k in range(t):
            beliefs[:, k + 1], p = self._bayes(beliefs[:, k], tokens[:, k])
            if strict and not bool((p > 0).all()):
                row = int(torch.nonzero(p <= 0)[0])
                raise ValueError(f"tokens[{row}, {k}] = {int(tokens[row, k])} has probability 0 after its prefix")
            logp[:, k + 1] = logp[:, k] + torch.log(p)
        return beliefs, logp

    def _bayes(self, beliefs: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One Bayes update ``η T[x] / (η T[x] 1)`` per row, and the token's probability ``η T[x] 1``."""
        unnorm = torch.bmm(beliefs[:, None, :], self._T[tokens]).squeeze(1)
        p = unnorm.sum(1)
        return unnorm / p.clamp(min=1e-300)[:, None], p

    def all_sequences(
        self, length: int, max_sequences: int = 5_000_000
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every sequence of ``length`` tokens with positive probability: ``tokens [N, length]``, their
        beliefs ``[N, length + 1, n_states]`` and log prefix probabilities ``[N, length + 1]``.

        Weighting each (sequence, position) by the whole sequence's probability weights each prefix
        by its own probability, as in Shai et al.'s regression over the mixed-state tree.
        """
        check_int("length", length)
        if self.n_tokens**length > max_sequences:
            raise ValueError(f"{self.n_tokens}**{length} sequences exceed max_sequences={max_sequences}")
        v = self.n_tokens
        tokens = torch.zeros(1, 0, dtype=torch.int64)
        beliefs = torch.from_numpy(self.initial)[None, None, :]
        logp = torch.zeros(1, 1, dtype=torch.float64)
        for _ in range(length):  # extend every prefix by every token, keep the possible ones
            parent = torch.arange(len(tokens)).repeat_interleave(v)
            token = torch.arange(v).repeat(len(tokens))
            child, p = self._bayes(beliefs[parent, -1], token)
            keep = p > 0
            parent, token, child, p = parent[keep], token[keep], child[keep], p[keep]
            tokens = torch.cat([tokens[parent], token[:, None]], 1)
            beliefs = torch.cat([beliefs[parent], child[:, None]], 1)
            logp = torch.cat([logp[parent], (logp[parent, -1] + torch.log(p))[:, None]], 1)
        return tokens, beliefs, logp

    def sample(self, n: int, length: int, generator: torch.Generator) -> ProcessBatch:
        """Sample ``n`` sequences of ``length`` tokens with their hidden states and exact beliefs.

        The first hidden state is drawn from ``initial``; each step then draws (token, next state)
        jointly from ``T[:, state, :]`` with Walker's alias method. Beliefs are looked up by walking
        the mixed-state graph (built once, up to ``_WALK_NODES`` mixed states) and computed by the
        Bayes update beyond its depth. All randomness comes from ``generator``.
        """
        check_int("n", n)
        check_int("length", length)
        s = self.n_states
        graph = self._walk_graph(length, n)
        u = torch.rand(length + 1, n, generator=generator, dtype=torch.float64)
        tokens = torch.empty(n, length, dtype=torch.int64)
        states = torch.empty(n, length + 1, dtype=torch.int64)
        beliefs = torch.empty(n, length + 1, s, dtype=torch.float64)
        chunks = [slice(i, min(i + _CHUNK, n)) for i in range(0, n, _CHUNK)]
        work = lambda rows: self._sample_chunk(u[:, rows], graph, tokens[rows], states[rows], beliefs[rows])  # noqa: E731
        map_threads(work, chunks)  # uniforms are pre-drawn: the same result on any number of threads
        return ProcessBatch(
            tokens=tokens,
            latents=beliefs[:, 1:],
            names=self.label_names,
            kind="continuous",
            states=states,
            prior=beliefs[:, 0],
        )

    def _sample_chunk(self, u, graph, tokens, states, beliefs) -> None:
        """Fill ``tokens``, ``states``, ``beliefs`` (views of one chunk of rows) from uniforms ``u``."""
        s, v = self.n_states, self.n_tokens
        k_out = v * s
        length = tokens.shape[1]
        walk_depth = length if graph.closed else min(length, graph.max_depth)  # a closed graph has every belief
        nxt = torch.from_numpy(graph.next).view(-1)
        state = torch.searchsorted(torch.from_numpy(np.cumsum(self.initial)), u[0].contiguous(), right=True)
        state = state.clamp_(max=s - 1)
        states[:, 0] = state
        node = torch.zeros(len(state), dtype=torch.int64)
        nodes = torch.empty(len(state), walk_depth, dtype=torch.int64)
        accept, alias = self._alias
        for k in range(length):
            scaled = u[k + 1] * k_out
            col = scaled.long().clamp_(max=k_out - 1)
            flat = state * k_out + col
            joint = torch.where(scaled - col < accept[flat], col, alias[flat])
            token, state = joint // s, joint % s
            tokens[:, k], states[:, k + 1] = token, state
            if k < walk_depth:
                node = nxt[node * v + token]
                nodes[:, k] = node
        beliefs[:, 0] = torch.from_numpy(self.initial)
        beliefs[:, 1 : walk_depth + 1] = torch.from_numpy(graph.beliefs)[nodes]
        for k in range(walk_depth, length):
            beliefs[:, k + 1] = self._bayes(beliefs[:, k], tokens[:, k])[0]

    def _walk_graph(self, length: int, batch: int):
        """The mixed-state graph used to look beliefs up while sampling, cached on the process. Its
        size is capped by ``_WALK_NODES`` and by a few nodes per sampled token, so that a small sample
        does not pay for a large graph."""
        budget = min(_WALK_NODES, max(4096, 2 * batch * length))
        cached = self._graph
        if cached is None or (cached.max_depth < length and not cached.closed and self._graph_budget < budget):
            self._graph = mixed_state_presentation(self, length, decimals=12, max_nodes=budget, truncate=True)
            self._graph_budget = budget
        return self._graph

    @property
    def _alias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Walker alias tables for P(x, j | i) over the flattened outcome ``x * n_states + j``."""
        if self._alias_tables is None:
            probs = self.T.transpose(1, 0, 2).reshape(self.n_states, -1)
            tables = [_alias_table(row) for row in probs]
            self._alias_tables = (
                torch.from_numpy(np.concatenate([a for a, _ in tables])),
                torch.from_numpy(np.concatenate([b for _, b in tables])),
            )
        return self._alias_tables

    def stream(self, batch_size: int, length: int, seed: int = 0) -> Iterator[ProcessBatch]:
        """An endless stream of :class:`ProcessBatch` for training; ``seed`` picks the stream."""
        g = torch.Generator().manual_seed(seed)
        while True:
            yield self.sample(batch_size, length, g)

    def training_batches(
        self, batch_size: int, n_ctx: int, *, soft: bool = False, seed: int = 0
    ) -> Iterator[torch.Tensor | tuple[torch.Tensor, torch.Tensor]]:
        """An endless stream of next-token training batches for a context of ``n_ctx`` tokens, with the
        signature every token source has, the board games included.

        Hard targets: ``tokens [batch_size, n_ctx + 1]`` (inputs ``[:, :-1]``, targets ``[:, 1:]``). Soft
        targets: ``(tokens [batch_size, n_ctx], probs [batch_size, n_ctx, n_tokens])``, the exact
        next-token distribution after each token, which carries all the information a sampled target
        does. Both forms are what :func:`toymodels.transformer.train_transformer` takes.
        """
        check_int("n_ctx", n_ctx)
        for sample in self.stream(batch_size, n_ctx if soft else n_ctx + 1, seed):
            if soft:
                yield sample.tokens, self.next_token_probs(sample.latents).float()
            else:
                yield sample.tokens

    def _check_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2 or tokens.is_floating_point():
            raise TypeError(f"tokens must be an integer tensor [batch, length], got {tokens!r:.80}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.n_tokens):
            raise ValueError(
                f"tokens must lie in [0, {self.n_tokens}), got values in [{int(tokens.min())}, {int(tokens.max())}]"
            )
        return tokens.long()


@dataclass(frozen=True)
class ProcessBatch(TokenBatch):
    """Tokens from a process with exact latents: ``latents[:, t]`` is the belief after token ``t``.

    ``states[:, k]`` is the hidden state after ``k`` tokens (``states[:, 0]`` drawn from the prior);
    ``prior`` the belief before any token, one row per sequence.
    """

    states: torch.Tensor | None = None  # [b, t + 1] int64
    prior: torch.Tensor | None = None  # [b, n_states] float64

    @property
    def beliefs(self) -> torch.Tensor:
        """``[b, t + 1, n_states]``: the belief after ``k`` tokens, for ``k = 0..t``."""
        return torch.cat([self.prior[:, None, :], self.latents], dim=1)
