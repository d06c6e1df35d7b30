"""The installed entry points cannot break other projects: a project whose own ``analysis/`` and ``games/``
packages come first on sys.path keeps a working pytest with groundtruth's plugin loaded, and the
``groundtruth`` command still finds its own packages there. Importing the entry points imports nothing
of groundtruth's layers, nor torch."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

LAYERS = {"groundtruth", "games", "toymodels", "analysis"}


@pytest.fixture
def user_project(tmp_path: Path) -> Path:
    """A project with its own ``analysis`` and ``games`` packages and a test that imports them."""
    for name in ("analysis", "games"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("OWNER = 'user'\n")
    (tmp_path / "analysis" / "helpers.py").write_text("def double(x):\n    return 2 * x\n")
    (tmp_path / "test_user.py").write_text(
        "import analysis\n"
        "import games\n"
        "from analysis.helpers import double\n\n\n"
        "def test_the_project_sees_its_own_packages(request):\n"
        "    assert request.config.pluginmanager.has_plugin('groundtruth')  # groundtruth's plugin is loaded\n"
        "    assert analysis.OWNER == games.OWNER == 'user' and double(2) == 4\n"
    )
    return tmp_path


def _run(args: list[str], folder: Path) -> subprocess.CompletedProcess:
    """``args`` run in ``folder``, which comes first on sys.path (as for ``python -m`` there)."""
    env = {**os.environ, "PYTHONPATH": str(folder)}
    return subprocess.run(args, cwd=folder, env=env, capture_output=True, text=True, timeout=300)


def test_a_project_with_its_own_analysis_package_keeps_a_working_pytest(user_project):
    pytest_run = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_user.py"]
    run = _run(pytest_run, user_project)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed" in run.stdout
    # Asking for the conformance suite in that session cannot work (its `analysis` is the project's): one
    # usage error that names the package in the way, not an import traceback.
    asked = _run([*pytest_run, "--groundtruth-sae=toymodels.sae.factories:topk"], user_project)
    assert asked.returncode == 4, asked.stdout + asked.stderr
    assert "another package of the same name" in asked.stderr
    assert f"'analysis' from {user_project / 'analysis' / '__init__.py'}" in asked.stderr


def test_the_command_finds_its_own_packages_in_a_project_with_the_same_names(user_project):
    script = Path(sys.executable).with_name("groundtruth")
    assert script.exists(), "install the checkout (pip install -e .) to get the console script"
    run = _run([str(script), "games", "--help"], user_project)  # imports analysis.experiments.games and games
    assert run.returncode == 0, run.stderr
    assert "--generate N" in run.stdout
    run = _run([sys.executable, "-m", "groundtruth_entry.cli", "--help"], user_project)
    assert run.returncode == 0, run.stderr
    assert "check-sae" in run.stdout


def _modules_after(statements: str) -> set[str]:
    """The modules a fresh Python process has imported after running ``statements``."""
    code = f"import sys\n{statements}\nprint('modules:', *sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return set(run.stdout.rsplit("modules:", 1)[1].split())


def test_importing_the_entry_points_imports_no_layer_and_no_torch():
    modules = _modules_after("import groundtruth_entry.cli, groundtruth_entry.pytest_plugin")
    assert "groundtruth_entry.pytest_plugin" in modules
    assert not modules & (LAYERS | {"torch"})


def test_listing_the_commands_imports_no_experiment():
    """``groundtruth --help`` stays fast: the experiments' options are declared when their command is used."""
    modules = _modules_after("from groundtruth_entry.cli import main\nassert main(['--help']) == 0")
    assert "analysis.cli" in modules
    assert not modules & {"torch", "analysis.experiments.beliefs", "analysis.experiments.games", "analysis.conformance"}
