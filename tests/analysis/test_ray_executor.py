"""The Ray executor on one local Ray instance on 127.0.0.1 (2 CPUs, started once for the module): every task's
result or exception as when run in this process, a worker that dies is retried and then reported, stopping
early cancels the rest, no Ray process outlives the instance; and without Ray, a clear error."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from analysis.experiments.sweep.ray_executor import RayTaskLost, ray_session, run_ray

ROOT = Path(__file__).resolve().parents[2]


def summarise(task: tuple[int, bool]) -> float:
    """Something deterministic computed with torch from the task; raises for tasks marked to fail."""
    seed, fail = task
    if fail:
        raise ValueError(f"task {seed} was told to fail")
    x = torch.randn(64, 64, generator=torch.Generator().manual_seed(seed))
    return float((x @ x.T).logdet())


def report_threads(task: int) -> int:
    return torch.get_num_threads()


def die(task: tuple[str, Path]) -> str:
    """Kill the worker process running this task: every time (``"always"``), or only the first time."""
    how, marker = task
    if how == "always" or not marker.exists():
        marker.touch()
        os._exit(1)
    return "second try"


def wait_for_release(task: tuple[Path, int]) -> int:
    """Mark the start, wait until the folder holds a file named "release" (at most five minutes, longer than the
    test waits for a second task to start on a loaded machine), mark the end."""
    folder, i = task
    (folder / f"started-{i}").touch()
    deadline = time.monotonic() + 300
    while not (folder / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    (folder / f"finished-{i}").touch()
    return i


@pytest.fixture(scope="module")
def local_ray():
    """One local instance for the module; afterwards none of its processes is left and the environment
    variables Ray set in this process are gone."""
    psutil = pytest.importorskip("psutil")  # installed with Ray
    pytest.importorskip("ray")
    before = dict(os.environ)
    started = time.perf_counter()
    with ray_session(num_cpus=2) as ray:
        print(f"ray_session start: {time.perf_counter() - started:.1f} s")
        assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")
        processes = psutil.Process().children(recursive=True)
        assert processes, "the local instance runs as child processes of this one"
        # Workers cannot import this file (pytest put its folder on this process's path only): send its
        # functions by value.
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
        yield ray
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
        processes += psutil.Process().children(recursive=True)
    _, alive = psutil.wait_procs(processes, timeout=20)
    assert not alive
    changed = {key for key in {*os.environ, *before} if os.environ.get(key) != before.get(key)}
    # Ray's own variables are put back (torch may set its own, e.g. TORCHINDUCTOR_CACHE_DIR, in a test's process)
    assert not {key for key in changed if key.startswith("RAY") or key == "PYTHONBREAKPOINT"}


def test_results_and_exceptions_are_those_of_running_each_task_here(local_ray):
    tasks = [(seed, seed % 3 == 1) for seed in range(6)]
    outcomes = list(run_ray(summarise, tasks, address=None, threads=1))
    assert sorted(task for task, _ in outcomes) == tasks  # every task exactly once
    for task, outcome in outcomes:
        if task[1]:
            with pytest.raises(ValueError) as here:
                summarise(task)
            assert type(outcome) is ValueError and str(outcome) == str(here.value)
            assert isinstance(outcome.__cause__, local_ray.exceptions.RayTaskError)
            assert "summarise" in str(outcome.__cause__)  # the remote traceback names the function
        else:
            assert outcome == summarise(task)


def test_workers_run_the_given_number_of_torch_threads(local_ray):
    assert [threads for _, threads in run_ray(report_threads, [0, 1], address=None, threads=2)] == [2, 2]


def test_a_dead_worker_is_retried_and_reported_when_every_try_dies(local_ray, tmp_path):
    tasks = [("once", tmp_path / "once"), ("always", tmp_path / "always")]
    outcomes = dict(run_ray(die, tasks, address=None, threads=1, max_retries=1))
    assert outcomes[tasks[0]] == "second try"
    assert isinstance(outcomes[tasks[1]], RayTaskLost)
    assert isinstance(outcomes[tasks[1]].__cause__, local_ray.exceptions.WorkerCrashedError)


def test_ctrl_c_cancels_the_tasks_not_finished(local_ray, tmp_path):
    """Four tasks on 2 CPUs that wait for a release, Ctrl-C once two run: after the release none finishes,
    neither the two running (interrupted) nor the two queued (cancelled, or interrupted if a freed CPU let one
    start first)."""

    def interrupt_when_two_run():
        deadline = time.monotonic() + 180  # Ray starting a second worker took over 60 s on a loaded machine
        while len(list(tmp_path.glob("started-*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_when_two_run, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        list(run_ray(wait_for_release, [(tmp_path, i) for i in range(4)], address=None, threads=1))
    (tmp_path / "release").touch()
    time.sleep(3)  # a task still running or started now would finish meanwhile
    assert len(list(tmp_path.glob("started-*"))) >= 2
    assert not list(tmp_path.glob("finished-*"))


def test_an_address_other_than_the_connected_cluster_is_refused(local_ray):
    with pytest.raises(ValueError, match="address"):
        list(run_ray(summarise, [(0, False)], address="127.0.0.1:1", threads=1))


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="threads"):
        run_ray(summarise, [], address=None, threads=0)
    with pytest.raises(ValueError, match="max_retries"):
        run_ray(summarise, [], address=None, threads=1, max_retries=-1)


def test_without_ray_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    with pytest.raises(ImportError, match=r"pip install 'groundtruth\[ray\]'"):
        run_ray(summarise, [(0, False)], address=None, threads=1)


def test_importing_the_executor_does_not_import_ray():
    code = "import sys, analysis.experiments.sweep.ray_executor; print('ray' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "False"


def test_a_sweep_on_ray_gives_the_local_executors_results(local_ray, tmp_path):
    from test_sweep import MEDIUM, metrics, weights

    from analysis.experiments.sweep import parse_sweep, run_sweep

    on_ray = run_sweep(parse_sweep(MEDIUM), tmp_path / "ray", executor="ray", progress=False)
    local = run_sweep(parse_sweep(MEDIUM), tmp_path / "local", workers=1, progress=False)
    assert on_ray.count("finished") == local.count("finished") == 4
    assert metrics(tmp_path / "ray") == metrics(tmp_path / "local")
    for rid in metrics(tmp_path / "local"):
        for name, tensor in weights(tmp_path / "local", rid).items():
            assert torch.equal(weights(tmp_path / "ray", rid)[name], tensor)
