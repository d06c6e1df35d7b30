"""Run a sweep's tasks on Ray: a local instance on this machine's loopback, or a running cluster.

Same contract as :func:`analysis.experiments.sweep.executors.run_local`: a top-level function and picklable
tasks in, ``(task, result or exception)`` out as tasks complete. Ray is an optional extra
(``pip install 'groundtruth[ray]'``); this module imports it only when called, because importing Ray
replaces ``sys.excepthook`` and registers exit handlers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from types import ModuleType

import torch

from groundtruth.checks import check_int

LOOPBACK = "127.0.0.1"
CANCEL_GRACE_SECONDS = 5.0  # how long cancelled tasks get to unwind (and remove their temporary folders)


class RayTaskLost(RuntimeError):
    """Ray could not finish a task for a reason outside it: its worker or node died (and every retry too),
    it ran out of memory, or it could not be scheduled."""


def _import_ray() -> ModuleType:
    try:
        import ray
    except ImportError as err:
        raise ImportError("the Ray executor needs Ray: pip install 'groundtruth[ray]'", name="ray") from err
    return ray


def _call(fn: Callable, task: object, threads: int) -> object:
    """What a Ray worker runs: ``fn(task)`` on ``threads`` torch threads (workers are reused between tasks,
    so the count is set every time)."""
    torch.set_num_threads(threads)
    return fn(task)


@contextmanager
def ray_session(address: str | None = None, *, num_cpus: int | None = None) -> Iterator[ModuleType]:
    """Connect this process to Ray for the length of the block and yield the ``ray`` module.

    ``address=None`` starts a local instance on 127.0.0.1 (``num_cpus`` CPUs, default all) without dashboard,
    usage stats or worker logs on this terminal, and stops it at the end; an address (``"HOST:PORT"`` or
    ``"auto"``) connects to a running cluster and leaves it running. A process that is already connected
    keeps its connection (and an address naming another cluster is an error). The environment variables
    Ray sets in this process while connecting (``RAY_AUTH_MODE``, ``RAY_USAGE_STATS_ENABLED``,
    ``PYTHONBREAKPOINT``) are put back at the end.
    """
    if num_cpus is not None:
        check_int("num_cpus", num_cpus)
    ray = _import_ray()
    if ray.is_initialized():
        connected = ray.get_runtime_context().gcs_address
        if address not in (None, "auto", connected):
            raise ValueError(f"address: this process is already connected to Ray at {connected}, not {address!r}")
        yield ray
        return
    before = dict(os.environ)
    if address is None:
        # On Linux Ray replaces 127.0.0.1 by the machine's network address (and then listens on every
        # interface) unless multi-node clusters are off, which makes it keep the loopback address.
        import ray._private.ray_constants as ray_constants

        multi_node, ray_constants.ENABLE_RAY_CLUSTER = ray_constants.ENABLE_RAY_CLUSTER, False
        try:
            ray.init(
                num_cpus=num_cpus,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
                _node_ip_address=LOOPBACK,
            )
        finally:
            ray_constants.ENABLE_RAY_CLUSTER = multi_node
    else:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    changed = {
        key: before.get(key) for key in os.environ.keys() | before.keys() if os.environ.get(key) != before.get(key)
    }
    try:
        yield ray
    finally:
        ray.shutdown()
        for key, value in changed.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_ray(
    fn: Callable, tasks: list, *, address: str | None, threads: int, max_retries: int = 3
) -> Iterator[tuple[object, object]]:
    """``fn(task)`` for every task as Ray tasks of ``threads`` CPUs each, yielding ``(task, result or
    exception)`` in completion order.

    ``address`` is as in :func:`ray_session` (``None``: a local instance for this call). ``fn`` must be a
    top-level function the workers can import. A task that raises yields its own exception (the Ray error
    with the remote traceback is its ``__cause__``) and the others go on; a task whose worker or node dies
    is rerun up to ``max_retries`` times and then yields :class:`RayTaskLost`. When the caller stops early
    (Ctrl-C, an exception, closing the iterator) the unfinished tasks are cancelled first. Bad arguments and
    a missing Ray fail here, before anything starts.
    """
    check_int("threads", threads)
    check_int("max_retries", max_retries, minimum=0)
    _import_ray()
    return _run(fn, list(tasks), address, threads, max_retries)


def _run(fn: Callable, tasks: list, address: str | None, threads: int, max_retries: int) -> Iterator[tuple]:
    with ray_session(address) as ray:
        remote = ray.remote(num_cpus=threads, max_retries=max_retries)(_call)
        pending = {remote.remote(fn, task, threads): task for task in tasks}
        try:
            while pending:
                [ref], _ = ray.wait(list(pending), num_returns=1)
                yield pending.pop(ref), _outcome(ray, ref, max_retries)
        finally:
            if pending:
                _cancel(ray, list(pending))


def _outcome(ray: ModuleType, ref: object, max_retries: int) -> object:
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        cause = err.cause if isinstance(err.cause, BaseException) else err
        if cause is not err:
            cause.__cause__ = err
        return cause
    except ray.exceptions.RayError as err:
        lost = RayTaskLost(
            f"Ray could not finish the task (one whose worker or node dies is rerun up to {max_retries} times): "
            f"{type(err).__name__}: {err}"
        )
        lost.__cause__ = err
        return lost


def _cancel(ray: ModuleType, refs: list) -> None:
    """Cancel tasks: queued ones never start, running ones get a KeyboardInterrupt; wait a little for them
    to unwind, and collect their errors so that Ray does not report them as unhandled."""
    for ref in reversed(refs):  # the last submitted first: they are the likeliest to be still queued
        ray.cancel(ref)
    done, _ = ray.wait(refs, num_returns=len(refs), timeout=CANCEL_GRACE_SECONDS)
    for ref in done:
        with suppress(ray.exceptions.RayError):
            ray.get(ref)


__all__ = ["RayTaskLost", "ray_session", "run_ray"]
