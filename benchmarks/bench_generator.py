"""Generator throughput on `synthsaebench-small`, side by side with SAELens's SyntheticModel.

Prints samples/s for both and the ratio. The anchor (DESIGN.md): SAELens ≈ 8.6k samples/s and
≈ 50 s to build on a 2-core CPU. Run: python benchmarks/bench_generator.py [--batch 4096]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time

import torch

from groundtruth import SparseFeatureModel, preset


def throughput(sample, batch: int, seconds: float) -> float:
    sample(batch)  # warm-up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        sample(batch)
        done += batch
    return done / (time.perf_counter() - start)


def saelens_model(cfg):
    """The same configuration expressed in SAELens's synthetic module."""
    from sae_lens.synthetic.firing_magnitudes import (
        FoldedNormalMagnitudeConfig,
        LinearMagnitudeConfig,
    )
    from sae_lens.synthetic.firing_probabilities import ZipfianFiringProbabilityConfig
    from sae_lens.synthetic.hierarchy import HierarchyConfig
    from sae_lens.synthetic.synthetic_model import (
        LowRankCorrelationConfig,
        OrthogonalizationConfig,
        SyntheticModel,
        SyntheticModelConfig,
    )

    h = cfg.hierarchy
    return SyntheticModel(
        SyntheticModelConfig(
            num_features=cfg.n_features,
            hidden_dim=cfg.d,
            firing_probability=ZipfianFiringProbabilityConfig(
                exponent=cfg.firing.exponent, max_prob=cfg.firing.p_max, min_prob=cfg.firing.p_min
            ),
            hierarchy=HierarchyConfig(
                total_root_nodes=h.n_roots,
                branching_factor=h.branching,
                max_depth=h.depth,
                mutually_exclusive_portion=1.0 if h.mutually_exclusive else 0.0,
                compensate_probabilities=h.compensate,
                scale_children_by_parent=h.scale_children,
            ),
            orthogonalization=OrthogonalizationConfig(num_steps=100, lr=3e-4),
            correlation=LowRankCorrelationConfig(rank=cfg.correlation.rank, correlation_scale=cfg.correlation.scale),
            std_firing_magnitudes=FoldedNormalMagnitudeConfig(mean=cfg.magnitude.std, std=cfg.magnitude.std_spread),
            mean_firing_magnitudes=LinearMagnitudeConfig(start=cfg.magnitude.mean_start, end=cfg.magnitude.mean_end),
            bias=cfg.bias_norm,
            seed=cfg.seed,
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="synthsaebench-small")
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--no-saelens", action="store_true", help="skip the side-by-side anchor")
    args = parser.parse_args()
    cfg = preset(args.preset)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, preset {args.preset}, batch {args.batch}")

    start = time.perf_counter()
    ours = SparseFeatureModel(cfg)
    build_ours = time.perf_counter() - start
    print(f"groundtruth: build {build_ours:6.2f} s")
    theirs = None
    if not args.no_saelens:
        try:
            start = time.perf_counter()
            with contextlib.redirect_stderr(io.StringIO()):  # a progress bar per orthogonalisation step
                theirs = saelens_model(cfg)
            print(f"SAELens:     build {time.perf_counter() - start:6.2f} s")
        except ImportError:
            print("sae-lens not installed (pip install -e '.[bench]'): no side-by-side anchor")

    g = torch.Generator().manual_seed(0)
    rate_ours = throughput(lambda n: ours.sample(n, g), args.batch, args.seconds)
    line = f"groundtruth {rate_ours:10,.0f} samples/s"
    if theirs is not None:
        with torch.no_grad():
            rate_theirs = throughput(lambda n: theirs.sample_with_features(n), args.batch, args.seconds)
        line += f"   SAELens {rate_theirs:10,.0f} samples/s   ratio {rate_ours / rate_theirs:5.1f}x"
    print(line, flush=True)


if __name__ == "__main__":
    main()
