"""Sweep sources read from a trained transformer: a hook of the model in a `groundtruth beliefs` or
`groundtruth games` run folder. Resolution checks the folder, the hook and the sizes before anything runs;
the identity is the model (config and weights), not where its folder is; SAEs train on rows of one cached
set of activations; scores are the generic ones (checked by hand) plus the run's ground truth, as the
experiment itself scores the same codes, and the SAE spliced into the model (a toy model's hidden layer too)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis.experiments.activations import activations, sae_codes
from analysis.experiments.beliefs import MODELS as BELIEF_MODELS
from analysis.experiments.beliefs import BeliefConfig, score_model
from analysis.experiments.games import MODELS as GAME_MODELS
from analysis.experiments.games import EvalGames, GameConfig, board_scores, game_inputs
from analysis.experiments.sweep import SweepError, load_results, parse_sweep, run_sweep
from analysis.experiments.sweep.hooks import MIN_EVAL_SEQUENCES, SPLICE_SEQUENCES
from analysis.metrics.beliefs import BeliefData
from analysis.metrics.splice import splice_scores, spliced_belief_r2
from games import PAD
from groundtruth.processes import process
from toymodels.sae import SAEConfig, load_sae, make_sae
from toymodels.transformer import load_transformer, save_transformer

BELIEFS = BeliefConfig(process="mess3", model="tiny", n_ctx=4, steps=10, batch_size=64, snapshots=0, shuffles=0)
GAMES = GameConfig(game="chess", model="tiny", max_plies=12, steps=5, batch_size=16)
FINAL = "blocks.0.hook_resid_post"  # the final layer of the one-layer beliefs model
N_EVAL = 300
SEQUENCES = 64


@pytest.fixture(scope="module")
def beliefs_run(tmp_path_factory) -> Path:
    from analysis.experiments.beliefs import open_model_run

    return open_model_run(BELIEFS, tmp_path_factory.mktemp("beliefs") / "mess3-tiny", progress=False)[0]


@pytest.fixture(scope="module")
def games_run(tmp_path_factory) -> Path:
    from analysis.experiments.games import open_model_run

    return open_model_run(GAMES, tmp_path_factory.mktemp("games") / "chess-tiny", progress=False)[0]


def sweep_text(run: Path, hook: str, extra: str = "", train: str = "steps = 20") -> str:
    return (
        f"[train]\n{train}\nbatch_size = 64\nn_eval = {N_EVAL}\n\n"
        f'[sources.m]\nrun = "{run}"\nhook = "{hook}"\n{extra}\n\n'
        '[grid]\nsource = "m"\nsae = "topk"\nwidth = 16\nk = [2, 4]\n'
    )


def resolve(run: Path, hook: str = FINAL, extra: str = f"sequences = {SEQUENCES}"):
    return parse_sweep(sweep_text(run, hook, extra)).runs[0].source


# ------------------------------------------------------------------------------------------------
# resolution
# ------------------------------------------------------------------------------------------------


def test_a_missing_or_unfinished_folder_is_named(beliefs_run, tmp_path):
    with pytest.raises(SweepError, match=r"sources\.m: run '.*nope': no such folder"):
        resolve(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SweepError, match=r"sources\.m: run '.*empty' holds no config\.json"):
        resolve(tmp_path / "empty")
    untrained = tmp_path / "untrained"  # training never finished: a config and checkpoints, no model/
    untrained.mkdir()
    shutil.copy(beliefs_run / "config.json", untrained / "config.json")
    with pytest.raises(SweepError, match=r"sources\.m: run '.*untrained' holds no trained model \(model/"):
        resolve(untrained)
    other = tmp_path / "other"  # a model, but from no experiment this source knows
    shutil.copytree(beliefs_run / "model", other / "model")
    (other / "config.json").write_text(json.dumps({"d": 3}))
    with pytest.raises(SweepError, match=r"sources\.m: run '.*other': config\.json is neither"):
        resolve(other)


def test_an_unknown_hook_lists_the_valid_ones(beliefs_run):
    for hook in ("blocks.3.hook_resid_post", "blocks.0.attn.hook_pattern", "hook_pos_embed"):
        with pytest.raises(SweepError, match=r"sources\.m: hook '.*' is not a per-position hook") as err:
            resolve(beliefs_run, hook)
        valid = str(err.value).split("valid: ")[1].split(", ")
        assert valid == [
            "hook_embed",
            "blocks.0.hook_resid_pre",
            "blocks.0.hook_resid_mid",
            "blocks.0.mlp.hook_post",
            "blocks.0.hook_resid_post",
            "ln_final.hook_normalized",
        ]
    with pytest.raises(SweepError, match=r"sources\.m: hook None"):
        parse_sweep(sweep_text(beliefs_run, FINAL).replace(f'hook = "{FINAL}"', ""))


@pytest.mark.parametrize("value, shown", [("0", "0"), ("-3", "-3"), ("2.5", "2.5"), ("true", "True"), ('"64"', "'64'")])
def test_sequences_must_be_a_positive_integer(beliefs_run, value, shown):
    with pytest.raises(SweepError, match=rf"sources\.m: sequences must be a positive integer, got {shown}$"):
        resolve(beliefs_run, extra=f"sequences = {value}")


def test_an_unknown_field_is_named(beliefs_run):
    with pytest.raises(SweepError, match=r"sources\.m: unknown field layer = 1 for a run source"):
        resolve(beliefs_run, extra="layer = 1")


# ------------------------------------------------------------------------------------------------
# identity and width
# ------------------------------------------------------------------------------------------------


def test_the_identity_is_the_model_not_its_folder(beliefs_run, tmp_path):
    moved = shutil.copytree(beliefs_run, tmp_path / "elsewhere" / "renamed")
    here, there = (parse_sweep(sweep_text(run, FINAL)) for run in (beliefs_run, moved))
    assert [r.id for r in here.runs] == [r.id for r in there.runs]
    assert here.runs[0].config["source"] == there.runs[0].config["source"]
    identity = here.runs[0].config["source"]["model_hook"]
    assert identity["run"] == json.loads((beliefs_run / "config.json").read_text())
    assert identity["hook"] == FINAL and identity["sequences"] == 4096  # the default
    assert str(beliefs_run) not in json.dumps(identity)
    other_hook = parse_sweep(sweep_text(beliefs_run, "blocks.0.hook_resid_pre"))
    more = parse_sweep(sweep_text(beliefs_run, FINAL, "sequences = 100"))
    ids = {r.id for sweep in (here, other_hook, more) for r in sweep.runs}
    assert len(ids) == 6  # two runs each, all different
    # Other weights under the same config: another model, other ids; runs resolved before refuse to build.
    model = load_transformer(moved / "model")
    with torch.no_grad():
        model.W_E.add_(1.0)
    shutil.rmtree(moved / "model")
    save_transformer(model, moved / "model")
    assert parse_sweep(sweep_text(moved, FINAL)).runs[0].id != here.runs[0].id
    with pytest.raises(ValueError, match="changed since the sweep was resolved"):
        there.runs[0].source.build(N_EVAL)


@pytest.mark.parametrize(
    "hook, width",
    [
        (FINAL, BELIEF_MODELS["tiny"]["d_model"]),
        ("blocks.0.mlp.hook_post", BELIEF_MODELS["tiny"]["d_mlp"]),
        ("ln_final.hook_normalized", BELIEF_MODELS["tiny"]["d_model"]),
    ],
)
def test_d_in_is_the_width_of_the_hook(beliefs_run, hook, width):
    assert BELIEF_MODELS["tiny"]["d_model"] != BELIEF_MODELS["tiny"]["d_mlp"]
    sweep = parse_sweep(sweep_text(beliefs_run, hook))
    assert sweep.runs[0].source.d_in == width and sweep.runs[0].sae.config.d_in == width


# ------------------------------------------------------------------------------------------------
# the stream
# ------------------------------------------------------------------------------------------------


def take(stream, n: int) -> torch.Tensor:
    return torch.stack([next(stream) for _ in range(n)])


@pytest.mark.parametrize("kind", ["beliefs", "games"])
def test_the_stream_is_rows_of_one_cache_and_a_seed_picks_them(kind, request):
    run = request.getfixturevalue(f"{kind}_run")
    hook = "blocks.1.hook_resid_post" if kind == "games" else FINAL
    spec = resolve(run, hook).model_hook
    built = spec.build(N_EVAL)
    model = load_transformer(run / "model")
    # The cache is the hook's activations over `sequences` sequences drawn from the run's own process or
    # game, with the model's seed (positions after a game's end left out).
    if kind == "beliefs":
        tokens = process("mess3").sample(SEQUENCES, BELIEFS.n_ctx, torch.Generator().manual_seed(spec.seed("train")))
        tokens, real = tokens.tokens, torch.ones(SEQUENCES, BELIEFS.n_ctx, dtype=torch.bool)
    else:
        tokens = game_inputs(GAMES, SEQUENCES, spec.seed("train"))
        real = tokens != PAD
    expected = activations(model, tokens, [hook])[1][hook][real]
    assert torch.equal(built.train, expected)
    first, again = (take(built.activations(32, seed=5), 4) for _ in range(2))
    assert first.shape == (4, 32, spec.d_in) and torch.equal(first, again)
    assert not torch.equal(first, take(built.activations(32, seed=6), 4))
    # every row served is a row of the cache
    assert (first.reshape(-1, 1, spec.d_in) == built.train[None]).all(-1).any(-1).all()
    # A second build (another process, another run of the sweep) caches the same rows.
    assert torch.equal(spec.build(N_EVAL).train, built.train)
    # The held-out rows are enough for n_eval and come from sequences of their own.
    n_ctx = tokens.shape[1]
    assert len(built.held_out) == max(MIN_EVAL_SEQUENCES, math.ceil(N_EVAL / n_ctx))
    assert int(built.real.sum()) >= min(N_EVAL, MIN_EVAL_SEQUENCES)
    if kind == "games":
        held = EvalGames.draw(GAMES, len(built.held_out), spec.seed("eval")).inputs
        assert torch.equal(built.real, held != PAD)
        assert not (held[:, None, :] == tokens[None]).all(-1).any()  # no training game is held out


# ------------------------------------------------------------------------------------------------
# scores
# ------------------------------------------------------------------------------------------------


class Identity:
    """Codes are the activations themselves: a perfect reconstruction, and the hook's own belief fit."""

    def __init__(self, d: int) -> None:
        self.W_dec = torch.eye(d)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return codes


def test_generic_scores_match_a_hand_computation(beliefs_run):
    spec = resolve(beliefs_run).model_hook
    built = spec.build(N_EVAL)
    x = built.held_out[built.real].double().numpy()
    # A ReLU SAE whose codes are all zero reconstructs every row as b_dec.
    sae = make_sae(SAEConfig("standard", spec.d_in, 24, seed=0))
    offset = torch.linspace(-1, 1, spec.d_in)
    with torch.no_grad():
        sae.W_enc.zero_(), sae.b_enc.fill_(-1.0), sae.b_dec.copy_(offset)
    scores = built.score(sae)
    error = ((x - offset.double().numpy()) ** 2).sum(1).mean()
    variance = (x**2).sum(1).mean() - (x.mean(0) ** 2).sum()
    assert scores["fve"] == pytest.approx(1 - error / variance, rel=1e-6)
    assert scores["mse"] == pytest.approx(error, rel=1e-6)
    assert scores["l0"] == 0 and scores["dead"] == 24 and scores["n_eval"] == len(x)
    perfect = built.score(Identity(spec.d_in))
    assert perfect["fve"] == pytest.approx(1.0, abs=1e-9) and perfect["mse"] == pytest.approx(0.0, abs=1e-9)
    assert perfect["l0"] == pytest.approx((x != 0).sum(1).mean()) and perfect["dead"] == 0
    assert all(type(v) in (float, int) for v in scores.values())


DOWNSTREAM = (
    "ce_loss_without_sae",
    "ce_loss_with_sae",
    "ce_loss_with_ablation",
    "ce_loss_with_mean_ablation",
    "ce_loss_score",
    "ce_loss_score_mean_ablation",
    "kl_div_with_sae",
    "kl_div_with_ablation",
    "kl_div_with_mean_ablation",
    "kl_div_score",
    "kl_div_score_mean_ablation",
    "n_positions",
)


def held_out_beliefs(spec, n: int) -> BeliefData:
    sample = process("mess3").sample(n, BELIEFS.n_ctx, torch.Generator().manual_seed(spec.seed("eval")))
    return BeliefData(sample.tokens, sample.latents, torch.full((n, BELIEFS.n_ctx), 1 / n, dtype=torch.float64), False)


@pytest.mark.parametrize("kind", ["beliefs", "games"])
def test_a_sweep_trains_and_scores_each_kind_as_its_experiment_would(kind, request, tmp_path):
    run = request.getfixturevalue(f"{kind}_run")
    hook = "blocks.1.mlp.hook_post" if kind == "games" else FINAL
    sweep = parse_sweep(sweep_text(run, hook, f"sequences = {SEQUENCES}"))
    report = run_sweep(sweep, tmp_path, workers=1, progress=False, device="cpu")
    assert report.count("finished") == 2 and not report.failed
    truth = ("belief_r2", "belief_mse") if kind == "beliefs" else ("coverage", "board_f1")
    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "runs").glob("*/run.json"))]
    assert sorted(r["columns"]["k"] for r in records) == [2, 4]
    for record in records:
        metrics = record["metrics"]
        assert set(metrics) == {"l0", "fve", "mse", "dead", "n_eval", *truth, *DOWNSTREAM, "final_coefficient"}
        assert 0 < metrics["l0"] <= record["columns"]["k"] and metrics["fve"] <= 1 and metrics["mse"] >= 0
        assert all(isinstance(metrics[key], float) for key in ("l0", "fve", "mse", *truth))
    table = load_results(tmp_path).set_index("id")
    assert all(table.loc[r["id"], key] == r["metrics"][key] for r in records for key in truth)
    # The ground truth in run.json is what the experiment's own scoring gives for the saved SAE's codes.
    spec = sweep.runs[0].source.model_hook
    record = next(r for r in records if r["id"] == sweep.runs[0].id)
    sae = load_sae(tmp_path / "runs" / record["id"] / "sae")
    model = load_transformer(run / "model")
    if kind == "beliefs":
        data = held_out_beliefs(spec, max(MIN_EVAL_SEQUENCES, math.ceil(N_EVAL / BELIEFS.n_ctx)))
        results, _, _ = score_model(model, process("mess3"), data, seed=BELIEFS.seed, sae=sae)
        assert record["metrics"]["belief_r2"] == pytest.approx(results["hooks"]["sae codes"]["r2"], rel=1e-6)
        assert record["metrics"]["belief_mse"] == pytest.approx(results["hooks"]["sae codes"]["mse"], rel=1e-6)
        # the downstream scores are the splice of the saved SAE into the model over the first held-out sequences
        tokens = data.tokens[:SPLICE_SEQUENCES]
        expected = splice_scores(model, sae, tokens, FINAL)
        assert {k: record["metrics"][k] for k in DOWNSTREAM} == pytest.approx(expected, rel=1e-5, abs=1e-7)
        assert spliced_belief_r2(model, sae, tokens, data.beliefs[:SPLICE_SEQUENCES], FINAL) == {}  # none later
        # and an SAE that passes the hook through scores the hook's own fit
        built = spec.build(N_EVAL)
        assert built.score(Identity(spec.d_in))["belief_r2"] == pytest.approx(results["hooks"][FINAL]["r2"], rel=1e-6)
    else:
        games = EvalGames.draw(GAMES, max(MIN_EVAL_SEQUENCES, math.ceil(N_EVAL / GAMES.n_ctx)), spec.seed("eval"))
        codes = sae_codes(sae, activations(model, games.inputs, [hook])[1][hook])
        expected = board_scores(codes, games, GAMES)
        assert record["metrics"]["coverage"] == expected["coverage"]
        assert record["metrics"]["board_f1"] == expected["reconstruction_f1"]
        tokens = torch.cat([games.inputs, games.targets[:, -1:]], 1)[:SPLICE_SEQUENCES]
        expected = splice_scores(model, sae, tokens, hook, pad=PAD)
        assert {k: record["metrics"][k] for k in DOWNSTREAM} == pytest.approx(expected, rel=1e-5, abs=1e-7)
        assert expected["n_positions"] == int((tokens[:, 1:] != PAD).sum())
        assert GAME_MODELS["tiny"]["d_mlp"] == spec.d_in
    assert np.isfinite(record["metrics"]["fve"])


def test_a_toy_model_source_is_scored_downstream_by_the_toys_own_loss(tmp_path):
    from analysis.metrics.splice import toy_splice_scores
    from toymodels.superposition import HiddenLayerSource, ToyModelConfig, train_toy_model

    toy = {"n_features": 8, "d_hidden": 4, "feature_probability": 0.2, "steps": 50, "batch_size": 64, "seed": 2}
    table = ", ".join(f"{k} = {v}" for k, v in toy.items())
    text = (
        f"[train]\nsteps = 20\nbatch_size = 64\nn_eval = {N_EVAL}\n\n[sources.toy]\ntoy_model = {{ {table} }}\n\n"
        '[grid]\nsource = "toy"\nsae = "topk"\nwidth = 8\nk = 2\n'
    )
    report = run_sweep(parse_sweep(text), tmp_path, workers=1, progress=False, device="cpu")
    assert report.count("finished") == 1 and not report.failed
    (folder,) = (tmp_path / "runs").iterdir()
    metrics = json.loads((folder / "run.json").read_text())["metrics"]
    cfg = ToyModelConfig(**toy)
    model = train_toy_model(cfg, progress=False)
    held = HiddenLayerSource(model, seed=cfg.seed).eval_set(N_EVAL)
    expected = toy_splice_scores(model, load_sae(folder / "sae"), held.codes.to_dense())
    assert {k: metrics[k] for k in expected} == pytest.approx(expected, rel=1e-6)
    assert metrics["loss_with_ablation"] > metrics["loss_without_sae"]


# ------------------------------------------------------------------------------------------------
# end-to-end SAEs (toymodels.e2e) in sweeps
# ------------------------------------------------------------------------------------------------

TOY = {"n_features": 8, "d_hidden": 4, "feature_probability": 0.2, "steps": 50, "batch_size": 64, "seed": 2}


def toy_sweep(saes: str, objective: str = "e2e") -> str:
    table = ", ".join(f"{k} = {v}" for k, v in TOY.items())
    return (
        f"[train]\nsteps = 20\nbatch_size = 64\nn_eval = {N_EVAL}\n\n[sources.toy]\ntoy_model = {{ {table} }}\n"
        f"[sources.sparse]\nsparse = {{ d = 4, n_features = 8, target_l0 = 2.0 }}\n\n"
        f'[saes.e2e]\narchitecture = "topk"\nobjective = "{objective}"\n\n[grid]\n{saes}\nwidth = 8\nk = 2\n'
    )


def test_an_objective_is_part_of_a_runs_identity_and_a_local_run_keeps_its_id():
    sweep = parse_sweep(toy_sweep('source = "toy"\nsae = ["topk", "e2e"]'))
    local, e2e = sweep.runs
    assert local.columns["objective"] == "local" and e2e.columns["objective"] == "e2e"
    assert "objective" not in local.config["sae"] and e2e.config["sae"]["objective"] == "e2e"
    assert {k: v for k, v in e2e.config["sae"].items() if k != "objective"} == local.config["sae"]
    assert local.stream_key != e2e.stream_key  # tokens or activations: they cannot share a stream
    plain = parse_sweep(toy_sweep('source = "toy"\nsae = "topk"').replace('objective = "e2e"\n', ""))
    assert plain.runs[0].id == local.id  # sweeps written before objectives existed keep their run ids


@pytest.mark.parametrize(
    "grid, objective, match",
    [
        ('source = "sparse"\nsae = "e2e"', "e2e", "needs a source with a model after it"),
        ('source = "toy"\nsae = "e2e"', "e2e+ds", "a toy_model has none"),
        ('source = "toy"\nsae = "e2e"', "end-to-end", r"saes.e2e.objective must be one of local, e2e, e2e\+ds"),
    ],
)
def test_an_objective_without_a_model_after_the_source_is_refused_by_name(grid, objective, match):
    with pytest.raises(SweepError, match=match):
        parse_sweep(toy_sweep(grid, objective))


def test_a_toy_sweep_trains_end_to_end_as_the_api_does(tmp_path):
    """The sweep's e2e SAE is the one toymodels.e2e trains on the same stream: same weights."""
    from toymodels.e2e import Objective
    from toymodels.sae import train_sae
    from toymodels.superposition import HiddenLayerSource, ToyModelConfig, train_toy_model

    sweep = parse_sweep(toy_sweep('source = "toy"\nsae = ["topk", "e2e"]'))
    report = run_sweep(sweep, tmp_path, workers=1, progress=False, device="cpu")
    assert report.count("finished") == 2 and not report.failed
    e2e = sweep.runs[1]
    saved = load_sae(tmp_path / "runs" / e2e.id / "sae")
    toy = train_toy_model(ToyModelConfig(**TOY), progress=False)
    sae = make_sae(e2e.sae.config)
    stream = HiddenLayerSource(toy, seed=TOY["seed"]).activations(64, seed=0)
    train_sae(sae, stream, sweep.train, progress=False, objective=Objective(toy, None, "e2e"))
    torch.testing.assert_close(saved.W_dec, sae.export_state()["W_dec"])
    local = load_sae(tmp_path / "runs" / sweep.runs[0].id / "sae")
    assert not torch.allclose(local.W_dec, saved.W_dec)  # the objective changed the training


@pytest.mark.parametrize("kind", ["beliefs", "games"])
def test_a_hook_sweep_trains_end_to_end_on_the_training_sequences(kind, request, tmp_path):
    """On a run hook an e2e SAE trains on batches of the training sequences through the model (a game's padding
    left out): the same weights as the API on the same batches, and it finishes with the same scores as a
    local SAE has."""
    from analysis.experiments.skeleton import cached_batches
    from toymodels.e2e import Objective
    from toymodels.sae import train_sae

    run = request.getfixturevalue(f"{kind}_run")
    hook = "blocks.0.hook_resid_post"
    text = (
        sweep_text(run, hook, f"sequences = {SEQUENCES}").replace('sae = "topk"', 'sae = ["topk", "e2e"]')
        + '\n[saes.e2e]\narchitecture = "topk"\nobjective = "e2e"\n'
    )
    sweep = parse_sweep(text)
    report = run_sweep(sweep, tmp_path, workers=1, progress=False, device="cpu")
    assert report.count("finished") == 4 and not report.failed, [o.error for o in report.failed]
    e2e = next(r for r in sweep.runs if r.columns["objective"] == "e2e")
    local = next(r for r in sweep.runs if r.columns["objective"] == "local" and r.columns["k"] == e2e.columns["k"])
    records = {r.id: json.loads((tmp_path / "runs" / r.id / "run.json").read_text()) for r in (e2e, local)}
    assert set(records[e2e.id]["metrics"]) == set(records[local.id]["metrics"])
    built = e2e.source.build(N_EVAL)
    sae = make_sae(e2e.sae.config)
    sequences = max(1, round(64 / built.tokens.shape[1]))
    objective = Objective(built.model, hook, "e2e", pad=PAD if kind == "games" else None)
    train_sae(sae, cached_batches(built.tokens, sequences, 0), sweep.train, progress=False, objective=objective)
    torch.testing.assert_close(load_sae(tmp_path / "runs" / e2e.id / "sae").W_dec, sae.export_state()["W_dec"])
