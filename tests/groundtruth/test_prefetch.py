"""Batches computed in worker processes: the same bytes as the serial stream for any number of workers,
in order, bounded, errors surfacing in the consumer, and no process left behind however the consumer stops."""

import gc
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from prefetch_jobs import fail_on_three, fail_unpicklably, growing, mixed, slow_square

from groundtruth import SparseFeatureConfig, SparseFeatureModel
from groundtruth.prefetch import Prefetch, WorkerTraceback
from groundtruth.strategies import seeds, sparse_feature_configs

ROOT = Path(__file__).resolve().parents[2]


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _gone(pids, seconds: float = 15.0) -> bool:
    """Whether every process in ``pids`` is gone within ``seconds``."""
    deadline = time.monotonic() + seconds
    while any(_alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.mark.parametrize("workers", [1, 2, 3])
@settings(max_examples=4, deadline=None)
@given(cfg=sparse_feature_configs(), seed=seeds(), batch_size=st.integers(1, 2500), stream=st.integers(0, 3))
def test_same_bytes_as_the_serial_stream(workers, cfg, seed, batch_size, stream):
    model = SparseFeatureModel(cfg.replace(seed=seed))
    serial = model.activations(batch_size, seed=stream)
    with model.prefetch(batch_size, seed=stream, workers=workers) as batches:
        for _ in range(5):
            x = next(batches)
            expected = next(serial)
            assert x.dtype == expected.dtype and x.shape == expected.shape
            assert torch.equal(x, expected)


def test_batches_arrive_in_key_order_when_workers_finish_out_of_order():
    with Prefetch(slow_square, range(12), workers=3, depth=6) as batches:
        assert [int(b) for b in batches] == [k * k for k in range(12)]


def test_keys_run_out_and_the_workers_stop():
    batches = Prefetch(slow_square, range(3), workers=2)
    assert [int(b) for b in batches] == [0, 1, 4]
    assert _gone(batches.pids, 5.0)
    assert next(batches, None) is None


def test_keys_are_drawn_at_most_depth_ahead():
    drawn = []

    def keys():
        for k in range(1000):
            drawn.append(k)
            yield k

    with Prefetch(slow_square, keys(), workers=2, depth=3) as batches:
        assert len(drawn) == 3  # before anything is delivered
        for delivered in range(1, 6):
            next(batches)
            assert len(drawn) == delivered + 3


def test_an_error_in_a_worker_surfaces_with_its_message_and_traceback():
    batches = Prefetch(fail_on_three, range(10), workers=2)
    assert [int(next(batches)) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="cannot compute key 3") as raised:
        next(batches)
    cause = raised.value.__cause__
    assert isinstance(cause, WorkerTraceback) and "fail_on_three" in str(cause)
    assert _gone(batches.pids, 5.0)  # an error closes it
    assert next(batches, None) is None


def test_an_exception_that_does_not_pickle_arrives_as_its_type_and_message():
    batches = Prefetch(fail_unpicklably, range(4), workers=1)
    with pytest.raises(RuntimeError, match="batch 0: _Unpicklable: holds a lock"):
        next(batches)


def test_an_error_in_the_consumer_leaves_no_worker():
    model = SparseFeatureModel(SparseFeatureConfig(d=8, n_features=30))
    with pytest.raises(ZeroDivisionError), model.prefetch(64, workers=2) as batches:
        pids = batches.pids
        next(batches)
        1 / 0  # noqa: B018
    assert _gone(pids, 5.0)
    assert not multiprocessing.active_children()


def test_an_abandoned_prefetch_stops_its_workers_when_collected():
    batches = Prefetch(slow_square, range(100), workers=2)
    next(batches)
    pids = batches.pids
    del batches
    gc.collect()
    assert _gone(pids, 5.0)


def test_a_dead_worker_is_an_error_not_a_hang():
    with Prefetch(slow_square, range(100), workers=1) as batches:
        next(batches)
        os.kill(batches.pids[0], signal.SIGKILL)
        with pytest.raises(RuntimeError, match="exited with code -9"):
            for _ in range(100):
                next(batches)


def _same(a, b) -> bool:
    """Equal values, with tensors compared by dtype, shape and bytes."""
    if isinstance(a, torch.Tensor):
        if a.layout != torch.strided:
            return a.layout == b.layout and torch.equal(a.to_dense(), b.to_dense())
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, tuple | list):
        return type(a) is type(b) and len(a) == len(b) and all(_same(u, v) for u, v in zip(a, b, strict=True))
    return a == b


@pytest.mark.parametrize("device", [None, "cpu"])
def test_results_keep_their_structure_dtypes_and_shapes(device):
    with Prefetch(mixed, range(6), workers=2, device=device) as batches:
        got = list(batches)
    assert all(_same(g, mixed(k)) for k, g in enumerate(got))
    assert all(t.is_contiguous() for t in got[0]["floats"])  # fresh tensors, not views of a slot


def test_delivered_batches_are_not_overwritten_when_slots_are_reused():
    with Prefetch(slow_square, range(30), workers=2, depth=2) as batches:
        kept = list(batches)  # 30 batches through 2 x 2 slots: each slot reused many times
    assert [int(b) for b in kept] == [k * k for k in range(30)]


def test_receiving_leaves_the_consumers_torch_threads_alone():
    """The thread that copies batches out of their slots does not set torch's thread count, which would
    change the count every later thread of the process starts with."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with Prefetch(growing, range(4), workers=1) as batches:
            list(batches)
        seen = []
        fresh = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        fresh.start()
        fresh.join()
        assert seen == [2] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_slots_grow_with_the_batches():
    with Prefetch(growing, range(8), workers=1, depth=1) as batches:
        assert all(torch.equal(b, growing(k)) for k, b in enumerate(batches))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"workers": 0}, "workers"), ({"depth": 0}, "depth"), ({"threads": 0}, "threads"), ({"device": "tpu"}, "tpu")],
)
def test_bad_arguments_are_refused_by_name_before_any_worker_starts(kwargs, name):
    with pytest.raises(ValueError, match=name):
        Prefetch(slow_square, range(3), **kwargs)
    assert not multiprocessing.active_children()


def test_a_compute_that_does_not_pickle_is_refused_by_name():
    with pytest.raises(TypeError, match="compute"):
        Prefetch(lambda k: k, range(3), workers=2)
    assert not multiprocessing.active_children()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batches_arrive_on_cuda_with_the_same_bytes():
    model = SparseFeatureModel(SparseFeatureConfig(d=8, n_features=30))
    serial = model.activations(1500, seed=1)
    with model.prefetch(1500, seed=1, workers=2, device="cuda") as batches:
        for _ in range(4):
            x = next(batches)
            assert x.device.type == "cuda" and torch.equal(x.cpu(), next(serial))


_CONSUMER = """
import os, sys, time
from groundtruth import SparseFeatureModel, SparseFeatureConfig

if __name__ == "__main__":
    batches = SparseFeatureModel(SparseFeatureConfig(d=8, n_features=30)).prefetch(256, workers=2)
    next(batches)
    print(*batches.pids, flush=True)
    sys.stdin.readline()
    if sys.argv[1] == "exit":
        sys.exit(0)  # without closing
    while True:
        next(batches)
        time.sleep(0.01)
"""


@pytest.mark.parametrize("stop", ["exit", "ctrl-c", "killed"])
def test_no_process_outlives_its_consumer(stop, tmp_path):
    """The consumer exits without closing, is interrupted by Ctrl-C (SIGINT to its whole process group,
    as a terminal sends it), or is killed outright: its workers, and the forkserver and resource tracker
    it started, are gone soon after."""
    script, stderr = tmp_path / "consumer.py", tmp_path / "stderr.txt"
    script.write_text(textwrap.dedent(_CONSUMER))
    proc = subprocess.Popen(  # stderr in a file: a worker left behind would hold a pipe open
        [sys.executable, str(script), stop],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr.open("w"),
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        start_new_session=True,
    )
    left: list[int] = []
    try:
        workers = [int(p) for p in proc.stdout.readline().split()]
        assert len(workers) == 2, stderr.read_text()
        helpers = _children(proc.pid)  # the forkserver (the workers' parent) and the resource tracker
        assert helpers and not set(helpers) & set(workers)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        if stop == "ctrl-c":
            time.sleep(0.5)  # consuming
            os.killpg(proc.pid, signal.SIGINT)
        elif stop == "killed":
            os.kill(proc.pid, signal.SIGKILL)
        left = workers + helpers
        proc.wait(timeout=30)
        assert _gone(left), f"left behind: {[p for p in left if _alive(p)]}"
        err = stderr.read_text()
        if stop == "ctrl-c":
            assert "KeyboardInterrupt" in err and err.count("Traceback") == 1, err  # the consumer's, no worker's
        else:
            assert "Traceback" not in err, err
    finally:
        for pid in [proc.pid, *left]:  # whatever a failure left running
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


class _Parent:
    """A stand-in for ``multiprocessing.parent_process()``: alive or not, and whether join() was waited on."""

    def __init__(self, alive: bool) -> None:
        self.alive, self.joined = alive, False

    def join(self, timeout: float) -> None:
        self.joined = True

    def is_alive(self) -> bool:
        return self.alive


@pytest.mark.parametrize(
    "kind, alive, reported",
    [
        (ConnectionResetError, False, False),  # the consumer was killed mid-handshake: the worker stays quiet
        (EOFError, False, False),
        (ConnectionResetError, True, True),  # a broken connection while the consumer lives is a real error
        (ValueError, False, True),  # and so is any other error
    ],
)
def test_a_worker_stays_quiet_only_about_the_connection_its_killed_consumer_broke(kind, alive, reported):
    from groundtruth.prefetch import _quiet_when_orphaned

    seen, parent = [], _Parent(alive)
    hook = _quiet_when_orphaned(lambda *exc: seen.append(exc[0]), parent)
    hook(kind, kind("x"), None)
    assert seen == ([kind] if reported else [])
    assert parent.joined == issubclass(kind, (ConnectionError, EOFError))
