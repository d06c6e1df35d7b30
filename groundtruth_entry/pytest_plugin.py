"""pytest plugin: ``pytest --groundtruth-sae=mypkg.mymodule:make_sae`` adds one test per conformance
property to the session.

Registered through the ``pytest11`` entry point, so every pytest session of the environment loads it.
Importing it imports only pytest: the conformance suite (:mod:`analysis.conformance`, and torch) is
imported inside the hooks, when ``--groundtruth-sae`` is given, so sessions that do not use it neither
pay for it nor see groundtruth's ``analysis`` package, and a project with its own ``analysis/`` or
``games/`` package runs its tests as if groundtruth were not installed."""

from __future__ import annotations

import pytest

from groundtruth_entry import import_own


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("groundtruth", "SAE conformance properties (groundtruth)")
    group.addoption(
        "--groundtruth-sae",
        action="append",
        default=[],
        metavar="MODULE:FACTORY",
        help="run the conformance properties against this SAE factory (repeatable)",
    )
    group.addoption(
        "--groundtruth-profile",
        choices=("fast", "thorough"),
        default="fast",
        help="conformance profile (default: fast)",
    )


class ConformanceFailure(AssertionError):
    """A property failed; the message carries the counterexample."""


class ConformanceItem(pytest.Item):
    """One property against one factory."""

    def __init__(self, *, factory_spec: str, prop, **kwargs):
        super().__init__(**kwargs)
        self.factory_spec, self.prop = factory_spec, prop

    def runtest(self) -> None:
        conformance = import_own("analysis.conformance")
        profile = conformance.PROFILES[self.config.getoption("groundtruth_profile")]
        result = conformance.run_property(self.prop, conformance.load_factory(self.factory_spec), profile)
        if result.status == "skipped":
            pytest.skip(result.detail)
        if result.status == "failed":
            raise ConformanceFailure(f"{self.prop.name}: {result.detail}\nwhy it matters: {self.prop.why}")

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, ConformanceFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        return self.factory_spec, None, f"{self.factory_spec}::{self.prop.name}"


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    specs = config.getoption("groundtruth_sae")
    if not specs:
        return
    try:
        conformance = import_own("analysis.conformance")
    except ImportError as err:
        raise pytest.UsageError(f"--groundtruth-sae: {err}") from err
    for spec in specs:
        try:
            factory = conformance.load_factory(spec)
        except ValueError as err:  # not module:callable, or nothing there
            raise pytest.UsageError(f"--groundtruth-sae: {err}") from err
        try:
            conformance.check_factory(factory)
        except TypeError as err:  # a signature the suite cannot call
            raise pytest.UsageError(f"--groundtruth-sae: {err}") from err
        for prop in conformance.PROPERTIES:
            items.append(
                ConformanceItem.from_parent(session, name=f"{spec}::{prop.name}", factory_spec=spec, prop=prop)
            )
