"""Hidden-Markov processes: mixed-state enumeration and sampling with exact beliefs.

epsilon-transformers is not on PyPI, so its numbers come from DESIGN.md (2-core CPU): the Mess3
mixed-state tree to depth 11 in ≈ 2.8 s, and ≈ 1.5e5 tokens/s sampled without beliefs. Beside them
this script times, in the same run, a plain Python reference of the same two jobs (a node-by-node
tree walk and a token-by-token sampler), so the ratio does not rest on the quoted numbers alone.
Run: python benchmarks/bench_processes.py [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from groundtruth.mixed_state import mixed_state_presentation
from groundtruth.processes import mess3

TREE_ANCHOR_S = 2.8
SAMPLING_ANCHOR = 1.5e5


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def python_tree(hmm, depth: int) -> int:
    """The straightforward enumeration: visit every sequence, one belief update per node."""
    stack, nodes, seen = [(hmm.initial, 0)], 0, set()
    while stack:
        belief, d = stack.pop()
        nodes += 1
        seen.add(tuple(np.round(belief, 5)))
        if d < depth:
            for x in range(hmm.n_tokens):
                child = belief @ hmm.T[x]
                stack.append((child / child.sum(), d + 1))
    return nodes


def python_sampler(hmm, n_tokens: int, rng: np.random.Generator) -> None:
    """One token at a time: draw (token, next state) from the current state's row."""
    rows = hmm.T.transpose(1, 0, 2).reshape(hmm.n_states, -1)
    state = rng.choice(hmm.n_states, p=hmm.initial)
    for _ in range(n_tokens):
        joint = rng.choice(rows.shape[1], p=rows[state])
        state = joint % hmm.n_states


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=200_000)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    hmm = mess3(0.05, 0.85)

    ours = best_of(lambda: mixed_state_presentation(hmm, 11), 5)
    graph = mixed_state_presentation(hmm, 11)
    start = time.perf_counter()
    naive_nodes = python_tree(hmm, 8)  # depth 8 only: the full depth takes minutes
    naive = (time.perf_counter() - start) * 3**3  # scale by the node ratio to depth 11 (x27)
    print(
        f"Mess3 (0.05, 0.85) mixed states to depth 11: {ours * 1e3:.1f} ms "
        f"({int(graph.level_counts().sum()):,} tree nodes, {graph.n_distinct(5):,} distinct at 5 decimals)"
    )
    print(f"  vs epsilon-transformers {TREE_ANCHOR_S} s (DESIGN.md): {TREE_ANCHOR_S / ours:.0f}x")
    print(
        f"  vs a Python node-by-node walk here (timed to depth 8, {naive_nodes:,} nodes, x27): "
        f"{naive:.1f} s, {naive / ours:.0f}x"
    )

    g = torch.Generator().manual_seed(0)
    hmm.sample(args.batch, 10, g)  # builds the look-up graph once, as a training stream would
    seconds = best_of(lambda: hmm.sample(args.batch, 10, g), 5)
    rate = args.batch * 10 / seconds
    start = time.perf_counter()
    python_sampler(hmm, 20_000, np.random.default_rng(0))
    naive_rate = 20_000 / (time.perf_counter() - start)
    print(
        f"sampling tokens + hidden states + exact beliefs, {args.batch:,} x 10 tokens, {args.threads} threads: "
        f"{rate:.3g} tokens/s"
    )
    print(
        f"  vs epsilon-transformers {SAMPLING_ANCHOR:.2g} tokens/s without beliefs (DESIGN.md): "
        f"{rate / SAMPLING_ANCHOR:.0f}x"
    )
    print(
        f"  vs a Python token-by-token sampler here (no beliefs): {naive_rate:.3g} tokens/s, {rate / naive_rate:.0f}x"
    )
    long = best_of(lambda: hmm.sample(args.batch // 10, 100, g), 3)
    print(
        f"  100-token sequences (beliefs past the look-up depth by Bayes updates): "
        f"{args.batch // 10 * 100 / long:.3g} tokens/s"
    )


if __name__ == "__main__":
    main()
