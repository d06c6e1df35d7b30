"""Where a sweep's tasks run: local worker processes (the default) or a Ray cluster
(:mod:`analysis.experiments.sweep.ray_executor`). Both take a top-level function and picklable tasks and
yield each task with its result, or the exception it raised, as tasks complete."""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

import torch


def _start_worker(threads: int) -> None:
    """A worker's setup: its torch threads, and Ctrl-C left to the parent, which stops the workers itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)


def run_local(fn: Callable, tasks: list, *, workers: int, threads: int) -> Iterator[tuple[object, object]]:
    """``fn(task)`` for every task on ``workers`` processes of ``threads`` torch threads each (in this
    process when ``workers`` is 1), yielding ``(task, result or exception)`` as tasks complete.

    Workers are spawned (torch is not fork-safe). When a worker dies (killed, out of memory) the pool
    breaks; its unfinished tasks get one more try in a fresh pool, and a task that breaks it twice is
    reported with :class:`BrokenProcessPool`.
    """
    if workers == 1:
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            for task in tasks:
                try:
                    yield task, fn(task)
                except Exception as err:
                    yield task, err
        finally:
            torch.set_num_threads(previous)
        return
    pending, broke = list(tasks), {}
    context = multiprocessing.get_context("spawn")
    others = set(multiprocessing.active_children())
    while pending:
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=(threads,)) as pool:
            futures = {pool.submit(fn, task): task for task in pending}
            pending = []
            try:
                while futures:
                    done, _ = wait(futures, return_when=FIRST_COMPLETED)
                    for future in done:
                        task = futures.pop(future)
                        try:
                            yield task, future.result()
                        except BrokenProcessPool as err:
                            # Every task the dead pool held fails with it: try each once more in a fresh pool.
                            broke[id(task)] = broke.get(id(task), 0) + 1
                            if broke[id(task)] > 1:
                                yield task, err
                            else:
                                pending.append(task)
                        except Exception as err:
                            yield task, err
            except BaseException:  # Ctrl-C, or the consumer stopped: stop the workers, not only the queue
                pool.shutdown(wait=False, cancel_futures=True)
                for child in set(multiprocessing.active_children()) - others:
                    child.terminate()
                raise


__all__ = ["run_local"]
