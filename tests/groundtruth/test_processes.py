"""Hidden-Markov processes: exact beliefs against brute-force Bayes, golden mixed-state counts,
entropy rates against closed forms, sampling frequencies against exact probabilities."""

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from groundtruth import strategies as gts
from groundtruth.entropy import block_entropy, entropy_rate, myopic_entropy, optimal_loss
from groundtruth.hmm import HMM
from groundtruth.mixed_state import mixed_state_presentation
from groundtruth.processes import (
    even,
    golden_mean,
    iid,
    mess3,
    mixture,
    no_consecutive_ones,
    process,
    product,
    random_epsilon_machine,
    random_hmm,
    rrxor,
    z1r,
)

SMALL = st.sampled_from([mess3(), mess3(0.05, 0.85), rrxor(), z1r(), even(), golden_mean(0.3)])


def brute_force_belief(hmm: HMM, word) -> tuple[np.ndarray, float]:
    """P(state after word, word) by summing over every hidden path, normalised: Bayes by enumeration."""
    paths = np.array(list(itertools.product(range(hmm.n_states), repeat=len(word) + 1))).reshape(-1, len(word) + 1)
    p = hmm.initial[paths[:, 0]]
    for k, x in enumerate(word):
        p = p * hmm.T[x, paths[:, k], paths[:, k + 1]]
    joint = np.bincount(paths[:, -1], weights=p, minlength=hmm.n_states)
    with np.errstate(invalid="ignore"):  # an impossible word has no belief (NaN)
        return joint / joint.sum(), joint.sum()


def h2(p: float) -> float:
    return -(p * np.log(p) + (1 - p) * np.log(1 - p))


@given(st.one_of(SMALL, gts.processes()), st.integers(0, 2**31 - 1))
def test_beliefs_equal_brute_force_bayes(hmm, seed):
    batch = hmm.sample(4, 4, torch.Generator().manual_seed(seed))
    beliefs, logp = hmm.filter(batch.tokens)
    for b in range(4):
        word = batch.tokens[b].tolist()
        for k in range(5):
            expected, prob = brute_force_belief(hmm, word[:k])
            np.testing.assert_allclose(beliefs[b, k].numpy(), expected, atol=1e-12)
            np.testing.assert_allclose(batch.beliefs[b, k].numpy(), expected, atol=1e-10)
            assert logp[b, k].item() == pytest.approx(np.log(prob), abs=1e-10)


@given(st.one_of(SMALL, gts.processes()), st.integers(0, 2**31 - 1), st.integers(1, 30))
def test_sampled_beliefs_are_distributions_and_match_the_filter(hmm, seed, length):
    batch = hmm.sample(8, length, torch.Generator().manual_seed(seed))
    assert batch.tokens.shape == (8, length) and batch.tokens.dtype == torch.int64
    assert batch.latents.shape == (8, length, hmm.n_states)
    assert batch.states.shape == (8, length + 1)
    assert (batch.beliefs >= 0).all()
    torch.testing.assert_close(batch.beliefs.sum(-1), torch.ones(8, length + 1, dtype=torch.float64))
    beliefs, _ = hmm.filter(batch.tokens)
    torch.testing.assert_close(batch.beliefs, beliefs, atol=1e-10, rtol=0)
    torch.testing.assert_close(hmm.labels(batch.tokens), batch.latents, atol=1e-10, rtol=0)  # labels of given tokens
    assert batch.names == hmm.label_names == tuple(f"belief[{i}]" for i in range(hmm.n_states))
    # every sampled transition has positive probability, and the true state has positive belief
    s, x = batch.states, batch.tokens
    assert (torch.from_numpy(hmm.T)[x, s[:, :-1], s[:, 1:]] > 0).all()
    assert (batch.beliefs.gather(2, s[:, :, None]) > 0).all()


@given(st.integers(0, 2**31 - 1))
def test_same_seed_same_bytes(seed):
    a = mess3().sample(64, 12, torch.Generator().manual_seed(seed))
    b = mess3().sample(64, 12, torch.Generator().manual_seed(seed))
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.states, b.states) and torch.equal(a.latents, b.latents)


def test_chunked_threaded_sampling_matches_one_thread():
    hmm = mess3(0.05, 0.85)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        a = hmm.sample(40_000, 8, torch.Generator().manual_seed(3))
        torch.set_num_threads(1)
        b = hmm.sample(40_000, 8, torch.Generator().manual_seed(3))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.latents, b.latents)


def test_word_frequencies_match_exact_probabilities():
    """Chi-square goodness of fit of sampled 3-token words against exact prefix probabilities."""
    hmm = mess3(0.05, 0.85)
    batch = hmm.sample(60_000, 3, torch.Generator().manual_seed(0))
    words = torch.tensor(list(itertools.product(range(3), repeat=3)))
    expected = torch.exp(hmm.log_prob(words)).numpy() * len(batch)
    index = (batch.tokens * torch.tensor([9, 3, 1])).sum(1)
    observed = np.bincount(index.numpy(), minlength=27)
    assert expected.sum() == pytest.approx(len(batch))
    assert stats.chisquare(observed, expected).pvalue > 1e-4
    # hidden states: the first state follows the prior, later ones the stationary chain
    counts = np.bincount(batch.states[:, 2].numpy(), minlength=3)
    assert stats.chisquare(counts, hmm.initial * len(batch)).pvalue > 1e-4


def test_mess3_golden_counts_and_optimal_loss():
    """Shai et al. (2024): 265,720 tree nodes and 237,844 distinct beliefs (5 decimals) to depth 11;
    optimal loss 0.8025 nats over positions 1-10."""
    graph = mixed_state_presentation(mess3(0.05, 0.85), 11)
    assert graph.level_counts().sum() == 265_720
    assert graph.n_distinct(5) == 237_844
    assert optimal_loss(mess3(0.05, 0.85), 10).mean() == pytest.approx(0.8025, abs=5e-5)


def test_rrxor_has_36_mixed_states_and_closes():
    graph = mixed_state_presentation(rrxor(), 50)
    assert graph.closed and len(graph) == 36 == graph.n_distinct(5)
    # the presentation is complete: every node's outgoing probabilities sum to one
    out = np.bincount(graph.src, weights=graph.prob, minlength=len(graph))
    np.testing.assert_allclose(out, 1.0)
    assert (graph.next >= 0).sum() == len(graph.src)


def test_graph_masses_and_edges_are_consistent():
    hmm = mess3()
    graph = mixed_state_presentation(hmm, 6)
    for mass in graph.level_masses():
        assert mass.sum() == pytest.approx(1.0)
    # an edge's probability is the next-token probability of its source belief
    probs = hmm.next_token_probs(graph.beliefs[graph.src])
    np.testing.assert_allclose(probs[np.arange(len(graph.src)), graph.token], graph.prob)
    # children are the Bayes update of their parent
    child = np.einsum("es,esj->ej", graph.beliefs[graph.src], hmm.T[graph.token])
    np.testing.assert_allclose(child / child.sum(1, keepdims=True), graph.beliefs[graph.dst], atol=1e-9)
    assert graph.level_counts().tolist() == [3**k for k in range(7)]


def test_block_entropy_equals_enumeration():
    hmm = rrxor(0.3, 0.6)
    words = torch.tensor(list(itertools.product(range(2), repeat=5)))
    p = torch.exp(hmm.log_prob(words)).numpy()
    p = p[p > 0]
    assert block_entropy(hmm, 5)[5] == pytest.approx(-(p * np.log(p)).sum())


@pytest.mark.parametrize(
    "hmm, rate",
    [
        (iid([0.3, 0.7]), h2(0.3)),
        (golden_mean(0.5), 2 / 3 * np.log(2)),
        (golden_mean(0.3), h2(0.3) / 1.3),
        (no_consecutive_ones(0.4), h2(0.4) / 1.4),
        (even(0.5), 2 / 3 * np.log(2)),
        (z1r(0.5), np.log(2) / 3),
        (rrxor(), 2 / 3 * np.log(2)),
    ],
)
def test_entropy_rates_equal_closed_forms(hmm, rate):
    assert entropy_rate(hmm) == pytest.approx(rate, abs=1e-12)
    # the myopic entropy decreases to the same rate from above
    h = myopic_entropy(hmm, 40)
    assert (np.diff(h) <= 1e-12).all()
    assert rate - 1e-12 <= h[-1] <= rate + 1e-4


def split_first_state(T: np.ndarray) -> np.ndarray:
    """The same process with state 0 split into two copies that share its future: non-unifilar."""
    v, s, _ = T.shape
    split = np.zeros((v, s + 1, s + 1))
    split[:, :s, :s] = T
    split[:, :, s] = split[:, :, 0] * 0.5
    split[:, :, 0] *= 0.5
    split[:, s] = split[:, 0]
    return split


@pytest.mark.parametrize("base", [even(), rrxor()])
def test_non_unifilar_and_non_stationary_presentations_keep_the_rate(base):
    """Even and RRXOR both produce 2/3 bit per token. A non-unifilar copy (one state split in two) and
    RRXOR started in one state must give it too; RRXOR's myopic entropy is flat for a step before it
    drops (ln 2, ln 2, 0.64, ...), which an early stop on the first small change gets wrong."""
    split = HMM(split_first_state(base.T))
    assert not split.is_unifilar()
    assert entropy_rate(split) == pytest.approx(2 / 3 * np.log(2), abs=1e-6)
    assert entropy_rate(HMM(base.T, np.eye(base.n_states)[0])) == pytest.approx(2 / 3 * np.log(2), abs=1e-6)


def test_mixture_and_product_rates():
    assert entropy_rate(mixture([z1r(), even()], [0.25, 0.75])) == pytest.approx(
        0.25 * np.log(2) / 3 + 0.75 * 2 / 3 * np.log(2)
    )
    assert entropy_rate(product(even(), golden_mean(0.3))) == pytest.approx(2 / 3 * np.log(2) + h2(0.3) / 1.3)
    prod = product(even(), z1r())
    assert (prod.n_tokens, prod.n_states) == (4, 6)
    with pytest.raises(ValueError, match="stationary"):
        HMM(mixture([z1r(), even()]).T)  # two stationary distributions: the prior must be given


@given(st.integers(0, 2**20), st.integers(1, 5), st.integers(2, 4))
def test_random_epsilon_machines_are_unifilar_and_connected(seed, n_states, n_tokens):
    hmm = random_epsilon_machine(n_states, n_tokens, seed)
    assert hmm.is_unifilar()
    assert np.allclose(hmm.initial @ hmm.transition, hmm.initial)
    assert (hmm.initial > 0).all()  # strongly connected: every state recurs


@given(st.integers(0, 2**20), st.integers(1, 4), st.integers(1, 4))
def test_random_hmms_are_valid(seed, n_states, n_tokens):
    hmm = random_hmm(n_states, n_tokens, seed)
    np.testing.assert_allclose(hmm.T.sum(axis=(0, 2)), 1.0)
    assert (hmm.T >= 0).all()


@pytest.mark.parametrize(
    "T, match",
    [
        (np.full((2, 2, 2), 0.3), "sum to 1"),
        (np.array([[[1.5, -0.5]], [[0.0, 0.0]]]), "shape"),
        (np.array([[[1.5, 0.0], [0.0, 1.0]], [[-0.5, 0.0], [0.0, 0.0]]]), "non-negative"),
        (np.full((1, 2, 2), np.nan), "NaN"),
        (np.ones((2, 2)), "shape"),
    ],
)
def test_invalid_processes_raise(T, match):
    with pytest.raises(ValueError, match=match):
        HMM(T)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="initial"):
        HMM(even().T, [0.5, 0.6])
    with pytest.raises(ValueError, match="x must lie"):
        mess3(0.7)
    with pytest.raises(ValueError, match="unknown process"):
        process("mess4")
    with pytest.raises(ValueError, match="tokens must lie"):
        mess3().filter(torch.tensor([[0, 3]]))
    with pytest.raises(ValueError, match="probability 0"):
        z1r().filter(torch.tensor([[1, 1, 1]]))  # Z1R never emits three 1s in a row
    with pytest.raises(ValueError, match="n_tokens"):
        mixture([mess3(), even()])
    with pytest.raises(ValueError, match="max_nodes"):
        mixed_state_presentation(mess3(), 20, max_nodes=1000)


def test_readme_process_example_runs():
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    code = readme.split("## Hidden-Markov processes and belief geometry")[1].split("```python")[1].split("```")[0]
    scope: dict = {}
    exec(code, scope)
    assert scope["graph"].n_distinct(5) == 237_844
    assert scope["batch"].latents.shape == (1024, 10, 3)


def test_all_sequences_equal_enumeration_with_brute_force_beliefs():
    hmm = rrxor(0.3, 0.6)
    tokens, beliefs, logp = hmm.all_sequences(5)
    words = [w for w in itertools.product(range(2), repeat=5) if brute_force_belief(hmm, w)[1] > 0]
    assert sorted(map(tuple, tokens.tolist())) == sorted(words)
    for row in range(0, len(tokens), 3):
        word = tokens[row].tolist()
        for k in range(6):
            expected, prob = brute_force_belief(hmm, word[:k])
            np.testing.assert_allclose(beliefs[row, k].numpy(), expected, atol=1e-12)
            assert logp[row, k].item() == pytest.approx(np.log(prob), abs=1e-10)


def test_training_batches_give_hard_tokens_or_exact_next_token_distributions():
    hmm = mess3(0.05, 0.85)
    hard = next(hmm.training_batches(8, 5, seed=1))
    assert hard.shape == (8, 6) and hard.dtype == torch.int64
    tokens, probs = next(hmm.training_batches(8, 5, soft=True, seed=1))
    assert tokens.shape == (8, 5) and probs.shape == (8, 5, 3)
    beliefs, _ = hmm.filter(tokens)
    torch.testing.assert_close(probs, hmm.next_token_probs(beliefs[:, 1:]).float())
    assert torch.equal(next(hmm.training_batches(8, 5, seed=1)), hard)  # the seed picks the stream
