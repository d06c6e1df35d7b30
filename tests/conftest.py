"""Hypothesis profiles: `dev` for local runs, `ci` (loaded when CI is set) keeps the suite fast and
deterministic on a 2-core machine."""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=15,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))

# One torch thread per test process: pytest-xdist already runs one process per core.
import torch  # noqa: E402

torch.set_num_threads(1)
