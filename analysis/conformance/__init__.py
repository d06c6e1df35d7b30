"""A conformance suite any SAE can be run through: properties checked with Hypothesis.

Most bugs in SAE code are silent: the loss still goes down, the code still runs. Each property here
pins one promise an SAE makes and checks it on generated inputs, so a violation comes back as a small
counterexample instead of a slightly worse scoreboard.

**The subject** is a factory ``make_sae(d_in, d_sae, *, seed=0, **knob)`` returning an object with
``encode(x) -> codes [..., d_sae]``, ``decode(codes) -> x_hat [..., d_in]`` and ``W_dec [d_sae, d_in]``.
Everything else is optional and unlocks more properties:

- a training step: built-in SAEs (and subclasses of :class:`toymodels.sae.SparseAutoencoder`) are
  trained with :class:`toymodels.sae.training.Trainer`; any other object may define ``training_step(x)``,
  which takes one optimiser step on batch ``x`` (it owns its optimiser) and may return an object
  with the step's ``codes``;
- save/load: :func:`toymodels.sae.save_sae`/``load_sae`` for built-ins, ``save_model`` /
  ``load_from_disk`` for SAELens SAEs, ``save(path)`` / ``type(sae).load(path)`` otherwise;
- declarations (:class:`Declared`): inferred for built-in and SAELens SAEs, and read from a
  ``groundtruth_declares`` attribute (a :class:`Declared` or a dict of its fields) on anything else.

Run it as ``groundtruth check-sae mypkg.mymodule:make_sae [--profile fast|thorough]``, as
``pytest --groundtruth-sae=mypkg.mymodule:make_sae`` (the plugin is :mod:`groundtruth_entry.pytest_plugin`),
or call :func:`check_sae`.
"""

from analysis.conformance.properties import PROFILES, PROPERTIES, Profile, Property
from analysis.conformance.runner import Result, check_factory, check_sae, results_table, run_property
from analysis.conformance.subject import Declared, Subject, declared, load_factory

__all__ = [
    "PROFILES",
    "PROPERTIES",
    "Declared",
    "Profile",
    "Property",
    "Result",
    "Subject",
    "check_factory",
    "check_sae",
    "declared",
    "load_factory",
    "results_table",
    "run_property",
]
