"""Running properties with Hypothesis and reporting the outcome as a table."""

from __future__ import annotations

import inspect
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from analysis.conformance.properties import PROFILES, PROPERTIES, Profile, Property
from analysis.conformance.subject import Subject, load_factory

# -- running --------------------------------------------------------------------------------------------


@dataclass
class Result:
    """The outcome of one property: ``passed``, ``failed`` or ``skipped``, with the counterexample
    (failed) or the reason (skipped) in ``detail``."""

    name: str
    status: Literal["passed", "failed", "skipped"]
    seconds: float
    detail: str = ""


def run_property(prop: Property, factory: Callable[..., Any], profile: Profile) -> Result:
    """Check one property with Hypothesis; a failure carries its counterexample, shrunk unless the
    property trains (there every example is a training run and seeds do not shrink meaningfully)."""
    from hypothesis import HealthCheck, Phase, given, settings

    started = time.perf_counter()
    d_in, d_sae = profile.sizes[0]
    try:
        reason = prop.needs(Subject(factory, d_in, d_sae))
    except Exception as err:  # the factory itself fails
        return Result(prop.name, "failed", time.perf_counter() - started, f"factory({d_in}, {d_sae}): {_describe(err)}")
    if reason is not None:
        return Result(prop.name, "skipped", time.perf_counter() - started, reason)

    @settings(
        max_examples=profile.training_examples if prop.training else profile.examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
        # Each example of a training property is a training run: report the first failure as drawn.
        phases=(Phase.explicit, Phase.generate) if prop.training else tuple(Phase),
    )
    @given(case=prop.cases(profile))
    def run(case: dict) -> None:
        prop.check(factory, profile, case)

    try:
        run()
    except Exception as err:  # a property failure, or the SAE raising on valid input
        return Result(prop.name, "failed", time.perf_counter() - started, _describe(err))
    return Result(prop.name, "passed", time.perf_counter() - started)


def _describe(err: Exception) -> str:
    """The error message and Hypothesis's shrunk example, on one line each."""
    message = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}".rstrip(": ")
    notes = " ".join(" ".join(note.split()) for note in getattr(err, "__notes__", []) if "case=" in note)
    # Hypothesis words this note differently across versions; the drawn case follows "case=".
    example = notes[notes.index("case=") + len("case=") :] if "case=" in notes else ""
    example = re.sub(r"#[^'{}]*", "", example)  # comments such as "# or any other generated value"
    example = re.sub(r",?\s*\)?\s*$", "", example)
    example = re.sub(r"\s+", " ", example).replace("{ ", "{").replace(", }", "}").replace(" ,", ",").strip()
    return f"{message}; counterexample {example}" if example else message


FACTORY_SIGNATURE = "make(d_in, d_sae, *, seed=0, **overrides)"


def check_factory(factory: Callable[..., Any]) -> None:
    """Raise a ``TypeError`` naming :data:`FACTORY_SIGNATURE` if ``factory`` cannot be called as the
    properties call it, ``factory(d_in, d_sae, seed=seed)``: otherwise every property would fail on the
    same call, and the table would hide the one thing to fix. (A sparsity knob keyword is optional: the
    property that turns it is skipped when the factory does not take it.)"""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # a callable without an inspectable signature: the properties will tell
        return
    try:
        signature.bind(16, 32, seed=0)
    except TypeError as err:
        name = getattr(factory, "__qualname__", type(factory).__name__)
        bare = signature.replace(
            parameters=[p.replace(annotation=p.empty) for p in signature.parameters.values()],
            return_annotation=signature.empty,
        )
        raise TypeError(
            f"factory {name}{bare} cannot be called as the suite needs, {FACTORY_SIGNATURE} "
            f"(see toymodels.sae.factories): {err}"
        ) from None


def check_sae(
    factory: Callable[..., Any] | str,
    profile: str = "fast",
    properties: tuple[str, ...] | None = None,
) -> list[Result]:
    """Run the conformance properties (all, or those named) against ``factory``."""
    if isinstance(factory, str):
        factory = load_factory(factory)
    check_factory(factory)
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {sorted(PROFILES)}, got {profile!r}")
    names = {p.name for p in PROPERTIES}
    unknown = set(properties or ()) - names
    if unknown:
        raise ValueError(f"unknown properties {sorted(unknown)}; known: {sorted(names)}")
    chosen = [p for p in PROPERTIES if properties is None or p.name in properties]
    return [run_property(p, factory, PROFILES[profile]) for p in chosen]


def results_table(results: list[Result]) -> str:
    """A plain-text table: property, outcome, seconds, and the counterexample or skip reason."""
    width = max(len(r.name) for r in results)
    lines = [f"{'property':<{width}}  {'result':<7}  {'time':>6}  detail"]
    for r in results:
        lines.append(f"{r.name:<{width}}  {r.status:<7}  {r.seconds:5.1f}s  {r.detail}")
    failed = sum(r.status == "failed" for r in results)
    passed = sum(r.status == "passed" for r in results)
    total = sum(r.seconds for r in results)
    lines.append(f"{passed} passed, {failed} failed, {len(results) - passed - failed} skipped in {total:.1f} s")
    return "\n".join(lines)
