"""Batches computed in worker processes and delivered in order: a data path that keeps a fast device fed.

A source whose batch ``i`` is a pure function of a cheap key (the sparse feature model's block seeds,
drawn in order from one generator) hands the expensive part to workers: the consumer draws the keys in
order, the workers compute the batches in any order, and the consumer receives them in key order, so the
stream is the same bytes for any number of workers. Workers start from a forkserver that has imported
torch (spawn where there is no forkserver), never by forking a process that may hold threads or a CUDA
context.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import pickle
import queue
import signal
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

import torch
import torch.multiprocessing

from groundtruth.checks import check_int
from groundtruth.devices import resolve_device

K = TypeVar("K")
T = TypeVar("T")

_POLL_S = 0.2  # how often a waiting worker checks for a stop or a vanished consumer, and the consumer for dead workers
_JOIN_S = 5.0  # how long close() lets workers finish their batch before terminating them


class WorkerTraceback(Exception):
    """The traceback of an exception raised in a worker process, attached as the re-raised exception's cause."""

    def __str__(self) -> str:
        return f"\n\n(in the worker process)\n{self.args[0]}"


class Prefetch(Generic[T], Iterator[T]):
    """``map(compute, keys)`` computed in ``workers`` processes, delivered in the order of ``keys``.

    ``keys`` is iterated lazily here, in the consumer, at most ``depth`` (default: 2 per worker) ahead of
    the batch last delivered: the memory held is bounded, and an endless ``keys`` is fine. ``compute`` must
    be picklable (a module-level function, or a ``functools.partial`` of one with its data); it is sent to
    each worker once, its tensors through shared memory. Each worker runs torch on ``threads`` threads.

    With ``device``, batches (tensors, or tuples, lists and dicts of them) arrive on that device; for CUDA
    they are copied through pinned memory without blocking the consumer. An exception in ``compute``
    is raised in the consumer with its message and the worker's traceback as its cause.

    Close it (or use it as a context manager) to stop the workers; it closes itself when ``keys`` runs
    out, on an error, and when it is garbage collected, and workers exit on their own if the consumer's
    process dies. Workers ignore Ctrl-C: the consumer gets the ``KeyboardInterrupt`` and stops them.
    """

    def __init__(
        self,
        compute: Callable[[K], T],
        keys: Iterable[K],
        *,
        workers: int = 2,
        depth: int | None = None,
        device: str | torch.device | None = None,
        threads: int = 1,
    ) -> None:
        self._closed = True  # until the workers exist: close() from __del__ after a failed start is a no-op
        check_int("workers", workers)
        check_int("threads", threads)
        depth = check_int("depth", 2 * workers if depth is None else depth)
        self._device = None if device is None else resolve_device(device)
        self._keys = iter(keys)
        self._depth = depth
        self._sent = self._delivered = 0
        self._exhausted = False
        self._ready: dict[int, T] = {}
        ctx = _context()
        self._tasks, self._results, self._stop = ctx.Queue(), ctx.Queue(), ctx.Event()
        self._workers = [
            ctx.Process(
                target=_work,
                args=(compute, threads, self._tasks, self._results, self._stop),
                name=f"groundtruth-prefetch-{i}",
                daemon=True,
            )
            for i in range(workers)
        ]
        self._closed = False
        try:
            for worker in self._workers:
                try:
                    worker.start()
                except (pickle.PicklingError, AttributeError, TypeError) as err:  # what pickling a lambda raises
                    raise TypeError(
                        f"compute must be picklable (a module-level function or a functools.partial of one), "
                        f"got {compute!r}: {err}"
                    ) from err
            self._fill()
        except BaseException:
            self.close()
            raise

    @property
    def pids(self) -> list[int | None]:
        """The workers' process ids (None for one not started), to watch or account for them."""
        return [w.pid for w in self._workers]

    def __iter__(self) -> Prefetch[T]:
        return self

    def __next__(self) -> T:
        if self._closed:
            raise StopIteration
        try:
            if self._delivered == self._sent:  # keys ran out and everything was delivered
                self.close()
                raise StopIteration
            while self._delivered not in self._ready:
                self._receive()
            batch = self._ready.pop(self._delivered)
            self._delivered += 1
            self._fill()
            return _to_device(batch, self._device)
        except BaseException:
            self.close()
            raise

    def _fill(self) -> None:
        """Send keys until ``depth`` batches are in flight or waiting to be delivered."""
        while not self._exhausted and self._sent - self._delivered < self._depth:
            try:
                key = next(self._keys)
            except StopIteration:
                self._exhausted = True
                return
            self._tasks.put((self._sent, key))
            self._sent += 1

    def _receive(self) -> None:
        """Wait for the next computed batch (any index); a worker that died without answering is an error."""
        while True:
            try:
                index, ok, payload = self._results.get(timeout=_POLL_S)
                break
            except queue.Empty:
                for worker in self._workers:
                    if not worker.is_alive():
                        raise RuntimeError(
                            f"prefetch worker {worker.name} (pid {worker.pid}) exited with code {worker.exitcode}"
                        ) from None
        if not ok:
            raise _remote_error(index, *payload)
        self._ready[index] = payload

    def close(self) -> None:
        """Stop the workers (each finishes the batch it is computing, or is terminated after a few seconds)
        and drop the batches not yet delivered. Closing twice is fine."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        deadline = time.monotonic() + _JOIN_S
        for worker in self._workers:
            if worker.pid is not None:
                worker.join(max(0.0, deadline - time.monotonic()))
        for worker in self._workers:
            if worker.is_alive():
                worker.terminate()
                worker.join()
        self._tasks.cancel_join_thread()  # keys nobody will read must not hold up this process's exit
        self._tasks.close()
        self._results.close()
        self._ready.clear()

    def __enter__(self) -> Prefetch[T]:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter exit the modules close() needs may be gone
            self.close()


def _context():
    """Forkserver (preloading torch, so each worker starts in a fraction of a second instead of importing
    torch again) where the platform has one, else spawn. Never fork: the consumer may hold threads and
    CUDA state that a forked child would inherit broken."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = torch.multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["__main__", "torch"])  # read only when the forkserver starts
        return ctx
    return torch.multiprocessing.get_context("spawn")


def _work(compute: Callable, threads: int, tasks, results, stop) -> None:
    """A worker's loop: compute ``(index, key)`` tasks until stopped or until the consumer's process is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the consumer's: it stops the workers
    torch.set_num_threads(threads)
    parent = multiprocessing.parent_process()
    while not stop.is_set():
        try:
            index, key = tasks.get(timeout=_POLL_S)
        except queue.Empty:
            if parent is not None and not parent.is_alive():
                break
            continue
        try:
            results.put((index, True, compute(key)))
        except Exception as err:
            results.put((index, False, _describe(err)))
    results.cancel_join_thread()  # batches nobody will read must not hold up the exit


def _describe(err: Exception) -> tuple[bytes | None, str, str]:
    """``err`` pickled (None if it cannot make the round trip), in words, and its traceback."""
    try:
        pickled = pickle.dumps(err)
        pickle.loads(pickled)
    except Exception:
        pickled = None
    return pickled, f"{type(err).__name__}: {err}", traceback.format_exc()


def _remote_error(index: int, pickled: bytes | None, words: str, trace: str) -> BaseException:
    """The worker's exception to raise in the consumer: the same type and message where it pickles."""
    err = (
        pickle.loads(pickled)
        if pickled is not None
        else RuntimeError(f"prefetch worker failed on batch {index}: {words}")
    )
    err.__cause__ = WorkerTraceback(trace)
    return err


def _to_device(batch, device: torch.device | None):
    """``batch`` (a tensor, or tuples, lists and dicts of them) on ``device``: through pinned memory and
    without blocking for CUDA (the copy is ordered before the consumer's kernels on the same stream)."""
    if device is None:
        return batch
    if isinstance(batch, torch.Tensor):
        if device.type == "cuda":
            return batch.pin_memory().to(device, non_blocking=True)
        return batch.to(device)
    if isinstance(batch, tuple | list):
        return type(batch)([_to_device(b, device) for b in batch])
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch


__all__ = ["Prefetch", "WorkerTraceback"]
