"""pytest plugin: ``pytest --groundtruth-sae=mypkg.mymodule:make_sae`` adds one test per conformance
property to the session. Registered through the ``pytest11`` entry point; it imports the suite (and
torch) only when the option is given, so other pytest sessions do not pay for it."""

from __future__ import annotations

import pytest


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
        from analysis.conformance import PROFILES, load_factory, run_property

        profile = PROFILES[self.config.getoption("groundtruth_profile")]
        result = run_property(self.prop, load_factory(self.factory_spec), profile)
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
    from analysis.conformance import PROPERTIES, load_factory

    for spec in specs:
        try:
            load_factory(spec)
        except ValueError as err:
            raise pytest.UsageError(f"--groundtruth-sae: {err}") from err
        for prop in PROPERTIES:
            items.append(
                ConformanceItem.from_parent(session, name=f"{spec}::{prop.name}", factory_spec=spec, prop=prop)
            )
