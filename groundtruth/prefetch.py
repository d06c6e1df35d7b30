"""Batches computed in worker processes and delivered in order: a data path that keeps a fast device fed.

A source whose batch ``i`` is a pure function of a cheap key (the sparse feature model's block seeds,
drawn in order from one generator) hands the expensive part to workers: the consumer draws the keys in
order, the workers compute the batches in any order, and the consumer receives them in key order, so the
stream is the same bytes for any number of workers. Workers start from a forkserver that has imported
torch (spawn where there is no forkserver), never by forking a process that may hold threads or a CUDA
context.

Tensors travel through shared-memory slots that each worker allocates once and reuses: the worker copies a
result's tensors into a free slot and sends only the small rest of the result (pickled, with the tensors'
places in the slot); a thread of the consumer's process receives them as they arrive, copies them out
(straight into pinned memory when the batch goes to CUDA) on that one thread, and hands the slot back, so
workers never wait on a consumer busy training, and the copies never spin up the consumer's intra-op pool
(with 2 threads on a busy 2-core machine that costs 6x the CPU). Sending each tensor through a queue instead (torch moves every one into a fresh
shared-memory segment and passes its file descriptor) costs about 10 ms for a 3 MB batch, which would cap
the consumer at ~100k samples/s of ``synthsaebench16k`` whatever the number of workers
(``benchmarks/bench_data_path.py``).
"""

from __future__ import annotations

import contextlib
import io
import math
import multiprocessing
import pickle
import queue
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

import numpy as np
import torch
import torch.multiprocessing

from groundtruth.checks import check_int
from groundtruth.devices import resolve_device

K = TypeVar("K")
T = TypeVar("T")

_POLL_S = 0.2  # how often a waiting worker checks for a stop or a vanished consumer, and the consumer for dead workers
_JOIN_S = 5.0  # how long close() lets workers finish their batch before terminating them
_ALIGN = 64  # byte alignment of each tensor in a slot, enough for any dtype's view


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
    A batch is any picklable object; the tensors in it arrive as fresh tensors (never views of memory a
    worker reuses), on ``device`` when one is given (for CUDA through pinned memory, without blocking).

    An exception in ``compute`` is raised in the consumer with its message and the worker's traceback as its
    cause. Close it (or use it as a context manager) to stop the workers; it closes itself when ``keys`` runs
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
        ctx = _context()
        self._tasks, self._stop = ctx.Queue(), ctx.Event()
        self._receiver = _Receiver(ctx, workers, self._device)
        slots = math.ceil(depth / workers) + 1  # per worker: enough for its share of the batches in flight
        self._workers = [
            ctx.Process(
                target=_work,
                args=(
                    compute,
                    threads,
                    i,
                    slots,
                    self._tasks,
                    self._receiver.results,
                    self._receiver.releases[i],
                    self._stop,
                ),
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
            self._receiver.start(self._workers)
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
            batch = self._receiver.take(self._delivered)
            self._delivered += 1
            self._fill()
            return batch
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

    def close(self) -> None:
        """Stop the workers (each finishes the batch it is computing, or is terminated after a few seconds)
        and drop the batches not yet delivered. Closing twice is fine."""
        if self._closed:
            return
        self._closed = True
        self._receiver.stop()
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
        self._receiver.close()

    def __enter__(self) -> Prefetch[T]:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter exit the modules close() needs may be gone
            self.close()


class _Failed:
    """A batch whose computation raised: the exception, raised when the batch's turn comes."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class _Receiver:
    """The consumer's side of the transport: a daemon thread that takes every message as it arrives, copies
    the batch out of its slot (NumPy's copy, on this thread alone: torch's would start the intra-op pool,
    and setting torch's thread count here would change the process's), hands the slot back, and keeps the
    batch until :meth:`take` asks for it. The thread holds this object, not the :class:`Prefetch`, so an
    abandoned ``Prefetch`` is still collected (and closed)."""

    def __init__(self, ctx, workers: int, device: torch.device | None) -> None:
        self.results = ctx.Queue()
        self.releases = [ctx.Queue() for _ in range(workers)]  # slots each worker may reuse
        self.device = device
        self.slots: dict[tuple[int, int], torch.Tensor] = {}  # (worker, slot) -> its shared bytes
        self.ready: dict[int, tuple[bytes, list[torch.Tensor]] | _Failed] = {}
        self.failure: BaseException | None = None  # a worker died: every batch after is lost
        self.changed = threading.Condition()
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self, workers: list) -> None:
        self.thread = threading.Thread(target=self._run, args=(workers,), name="groundtruth-prefetch", daemon=True)
        self.thread.start()

    def take(self, index: int):
        """Batch ``index`` (on the device), once it has arrived; raises what computing it raised."""
        with self.changed:
            while index not in self.ready and self.failure is None:
                self.changed.wait(_POLL_S)
            if index not in self.ready:
                raise self.failure
            got = self.ready.pop(index)
        if isinstance(got, _Failed):
            raise got.error
        data, tensors = got
        return _Unpickler(io.BytesIO(data), tensors, self.device).load()

    def _run(self, workers: list) -> None:
        try:
            while not self.stopping.is_set():
                try:
                    index, ok, payload = self.results.get(timeout=_POLL_S)
                except queue.Empty:
                    for worker in workers:
                        if not worker.is_alive() and not self.stopping.is_set():
                            raise RuntimeError(
                                f"prefetch worker {worker.name} (pid {worker.pid}) exited with code {worker.exitcode}"
                            ) from None
                    continue
                got = self._unpack(payload) if ok else _Failed(_remote_error(index, *payload))
                with self.changed:
                    self.ready[index] = got
                    self.changed.notify_all()
        except Exception as err:  # reported to the consumer, which closes
            with self.changed:
                self.failure = err
                self.changed.notify_all()

    def _unpack(self, payload) -> tuple[bytes, list[torch.Tensor]]:
        """The pickled rest of a batch and its tensors, copied out of the slot, which goes back to its worker."""
        worker, slot, new, data, layout = payload
        if new is not None:
            self.slots[worker, slot] = new
        pin = self.device is not None and self.device.type == "cuda"
        tensors = []
        for offset, dtype, shape in layout:
            count = math.prod(shape) * dtype.itemsize
            raw = torch.empty(count, dtype=torch.uint8, pin_memory=pin)
            np.copyto(raw.numpy(), self.slots[worker, slot][offset : offset + count].numpy())
            tensors.append(raw.view(dtype).view(shape))
        if layout:
            self.releases[worker].put(slot)
        return data, tensors

    def stop(self) -> None:
        self.stopping.set()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join()

    def close(self) -> None:
        for q in self.releases:
            q.cancel_join_thread()  # what nobody will read must not hold up this process's exit
            q.close()
        self.results.close()
        self.ready.clear()
        self.slots.clear()


def _context():
    """Forkserver (preloading torch, so each worker starts in a fraction of a second instead of importing
    torch again) where the platform has one, else spawn. Never fork: the consumer may hold threads and
    CUDA state that a forked child would inherit broken."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = torch.multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["__main__", "torch"])  # read only when the forkserver starts
        return ctx
    return torch.multiprocessing.get_context("spawn")


class _Stopped(Exception):
    """The worker was told to stop, or its consumer is gone, while it waited."""


def _waiting(stop, parent) -> None:
    """Raise :class:`_Stopped` if a waiting worker should give up."""
    if stop.is_set() or (parent is not None and not parent.is_alive()):
        raise _Stopped


class _Slots:
    """A worker's shared-memory slots: it copies a result's tensors into a free one, and the consumer hands
    it back (through ``releases``) once it has copied them out. At most ``most`` slots, made as needed."""

    def __init__(self, worker: int, most: int, releases, stop, parent) -> None:
        self.worker, self.most, self.releases, self.stop, self.parent = worker, most, releases, stop, parent
        self.slots: list[torch.Tensor] = []
        self.free: set[int] = set()

    def pack(self, result) -> tuple:
        """The message for ``result``: (worker, slot, the slot if new else None, pickled rest, tensor layout)."""
        data, tensors = io.BytesIO(), []
        _Pickler(data, tensors).dump(result)
        layout, size = [], 0
        for t in tensors:
            size = -(-size // _ALIGN) * _ALIGN
            layout.append((size, t.dtype, tuple(t.shape)))
            size += t.numel() * t.element_size()
        if not tensors:
            return self.worker, None, None, data.getvalue(), layout
        slot, new = self._take(size)
        for t, (offset, dtype, shape) in zip(tensors, layout, strict=True):
            _view(self.slots[slot], offset, dtype, shape).copy_(t)
        return self.worker, slot, new, data.getvalue(), layout

    def _take(self, size: int) -> tuple[int, torch.Tensor | None]:
        """A free slot of at least ``size`` bytes, and the slot itself when the consumer has not seen it."""
        while True:
            with contextlib.suppress(queue.Empty):
                while True:
                    self.free.add(self.releases.get_nowait())
            fits = [s for s in self.free if self.slots[s].numel() >= size]
            if fits:
                slot = min(fits, key=lambda s: self.slots[s].numel())
                self.free.remove(slot)
                return slot, None
            if len(self.slots) < self.most or self.free:  # make one, or replace a free one that is too small
                made = torch.empty(max(size, 1), dtype=torch.uint8).share_memory_()
                if len(self.slots) < self.most:
                    self.slots.append(made)
                    return len(self.slots) - 1, made
                slot = self.free.pop()
                self.slots[slot] = made
                return slot, made
            try:
                self.free.add(self.releases.get(timeout=_POLL_S))
            except queue.Empty:
                _waiting(self.stop, self.parent)


class _Pickler(pickle.Pickler):
    """Pickles a result with its (strided) tensors left out, collected in ``tensors`` to travel in a slot."""

    def __init__(self, file, tensors: list[torch.Tensor]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.tensors = tensors

    def persistent_id(self, obj):
        if isinstance(obj, torch.Tensor) and obj.layout == torch.strided:
            self.tensors.append(obj.detach().cpu())
            return len(self.tensors) - 1
        return None


class _Unpickler(pickle.Unpickler):
    """Unpickles a batch with its tensors (copied out of their slot) put back, moved to ``device`` if given."""

    def __init__(self, file, tensors: list[torch.Tensor], device: torch.device | None) -> None:
        super().__init__(file)
        self.tensors, self.device = tensors, device

    def persistent_load(self, pid: int) -> torch.Tensor:
        tensor = self.tensors[pid]
        if self.device is None:
            return tensor
        # From pinned memory for CUDA: the copy does not block, and is ordered before the consumer's kernels.
        return tensor.to(self.device, non_blocking=self.device.type == "cuda")


def _view(slot: torch.Tensor, offset: int, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    """The tensor of ``dtype`` and ``shape`` stored at byte ``offset`` of ``slot``."""
    count = math.prod(shape) * dtype.itemsize
    return slot[offset : offset + count].view(dtype).view(shape)


def _work(compute: Callable, threads: int, worker: int, slots: int, tasks, results, releases, stop) -> None:
    """A worker's loop: compute ``(index, key)`` tasks until stopped or until the consumer's process is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the consumer's: it stops the workers
    torch.set_num_threads(threads)
    parent = multiprocessing.parent_process()
    sys.excepthook = _quiet_when_orphaned(sys.excepthook, parent)
    place = _Slots(worker, slots, releases, stop, parent)
    with contextlib.suppress(_Stopped):
        while not stop.is_set():
            try:
                index, key = tasks.get(timeout=_POLL_S)
            except queue.Empty:
                _waiting(stop, parent)
                continue
            try:
                message = (index, True, place.pack(compute(key)))
            except _Stopped:
                raise
            except Exception as err:
                message = (index, False, _describe(err))
            results.put(message)
    results.cancel_join_thread()  # batches nobody will read must not hold up the exit


def _quiet_when_orphaned(report: Callable, parent) -> Callable:
    """``report`` (an excepthook), except for the broken connection a worker's thread that shares a new slot
    with the consumer (multiprocessing's resource sharer, which reports through ``sys.excepthook``) sees
    when the consumer is killed mid-handshake: that is no error of the worker's, and a user who killed the
    consumer should not get a worker's traceback."""

    def hook(kind, value, trace) -> None:
        if issubclass(kind, (ConnectionError, EOFError)) and parent is not None:
            parent.join(1.0)  # the consumer's death closes the socket and its sentinel, in either order
            if not parent.is_alive():
                return
        report(kind, value, trace)

    return hook


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
    err = pickle.loads(pickled) if pickled is not None else None
    if err is None:
        err = RuntimeError(f"prefetch worker failed on batch {index}: {words}")
    err.__cause__ = WorkerTraceback(trace)
    return err


__all__ = ["Prefetch", "WorkerTraceback"]
