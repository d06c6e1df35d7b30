"""A two-node Ray cluster on this machine (a head node and a worker node, each its own `ray start` process on
a loopback address), to try the Ray executor on more than one node and on a node that dies.

Without --run it runs a demo: toy tasks that sleep, through `run_ray` on the cluster; it kills the worker node
while a task runs there, and checks that every task still finishes (Ray reruns the lost one on the head). With
--run it runs a command against the cluster instead, `{address}` replaced by the head's address, and kills the
worker node --kill-worker-after seconds into it, e.g.

    python benchmarks/ray_cluster.py --kill-worker-after 20 \\
        --run "groundtruth sweep run FILE --out DIR --executor ray --address {address}"

The cluster is always stopped at the end (also on Ctrl-C, SIGTERM or an error): each node's `ray start --block`
process is terminated, which stops that node's processes, and anything of its process tree still alive
after that is killed. Only processes this script started are touched (`ray stop` would stop every Ray
node on the machine, other people's included).

Ray quirks this works around:
- Ray replaces 127.0.0.1 (and "localhost") given as a node address by the machine's network address, and
  refuses worker nodes when told to keep the loopback address. Any other loopback address (default
  127.0.0.2) is kept as given, so the nodes talk over the loopback interface only (their ports still
  listen on all interfaces).
- Ray 2.60 turns token authentication on for a new head node whenever a token exists (~/.ray/auth_token
  is written by every plain `ray.init()`), but a node or driver joining by an explicit address only uses
  it when RAY_AUTH_MODE=token is set. This script makes its own token file and sets RAY_AUTH_MODE=token
  and RAY_AUTH_TOKEN_PATH for both nodes and for the command it runs.

Run: python benchmarks/ray_cluster.py [--tasks 12] [--task-seconds 2] [--kill-worker-after 4] [--run CMD]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil  # installed with Ray

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
READY = "Ray runtime started."


class LocalCluster:
    """A head node and a worker node on ``ip``, each a ``ray start --block`` process in its own session (so
    Ctrl-C reaches only this script, which then stops them). Use as a context manager: the cluster is
    stopped on the way out, whatever happens."""

    def __init__(self, ip: str = "127.0.0.2", port: int = 0, head_cpus: int = 1, worker_cpus: int = 1):
        self.ip, self.head_cpus, self.worker_cpus = ip, head_cpus, worker_cpus
        self.port = port or free_port(ip)
        self.address = f"{ip}:{self.port}"
        # Short: Ray's Unix socket paths under it must stay below 108 characters.
        self.dir = Path(tempfile.mkdtemp(prefix="raycl-", dir="/tmp"))
        token = self.dir / "auth_token"
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
        # For the nodes, their workers and any driver: token auth with this cluster's token; this checkout
        # importable by the workers.
        self.env = {
            **os.environ,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(token),
            "PYTHONPATH": pythonpath,
        }
        self.nodes: dict[str, subprocess.Popen] = {}
        self.start_seconds: dict[str, float] = {}

    def __enter__(self) -> LocalCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        """Start the head, then the worker once the head is up (``start_seconds``: how long each took)."""
        common = ["--block", f"--node-ip-address={self.ip}", "--disable-usage-stats"]
        for name, args in (
            ("head", ["--head", f"--port={self.port}", f"--num-cpus={self.head_cpus}", "--include-dashboard=false"]),
            ("worker", [f"--address={self.address}", f"--num-cpus={self.worker_cpus}"]),
        ):
            started = time.perf_counter()
            log = open(self.dir / f"{name}.log", "w")  # noqa: SIM115 (the child writes it for its whole life)
            self.nodes[name] = subprocess.Popen(
                [RAY, "start", *args, *common, f"--temp-dir={self.dir / name}"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
            log.close()
            self._wait_ready(name)
            self.start_seconds[name] = time.perf_counter() - started

    def _wait_ready(self, name: str, timeout: float = 180.0) -> None:
        log, deadline = self.dir / f"{name}.log", time.monotonic() + timeout
        while READY not in log.read_text():
            if self.nodes[name].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the {name} node did not start; its log ({log}) ends with:\n{log.read_text()[-3000:]}"
                )
            time.sleep(0.2)

    def worker_pids(self) -> set[int]:
        return {process.pid for process in _tree(self.nodes["worker"])}

    def kill_worker(self) -> int:
        """Kill every process of the worker node at once (SIGKILL), as when its machine dies; return how many."""
        tree = _tree(self.nodes["worker"])
        for process in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        return len(tree)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the worker node, then the head: SIGTERM to each ``ray start --block`` (it stops its node),
        then SIGKILL to whatever of the node's process tree is still alive after ``timeout`` seconds."""
        for name in ("worker", "head"):
            node = self.nodes.pop(name, None)
            if node is None:
                continue
            tree = _tree(node)
            if node.poll() is None:
                node.terminate()
            _, alive = psutil.wait_procs(tree, timeout=timeout)
            for process in alive:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.kill()
            node.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def _tree(node: subprocess.Popen) -> list[psutil.Process]:
    """The node's ``ray start`` process and everything below it (Ray's workers put themselves in process
    groups of their own, so the node's process group would miss them)."""
    try:
        top = psutil.Process(node.pid)
        return [top, *top.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def free_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def nap(task: tuple[int, float, str]) -> tuple[int, int]:
    """A toy task: note the attempt (task number and process id), sleep, return the task's number and the
    process id."""
    i, seconds, attempts = task
    with open(attempts, "a") as f:
        f.write(f"{i} {os.getpid()}\n")
    time.sleep(seconds)
    return i, os.getpid()


def demo(cluster: LocalCluster, tasks: int, task_seconds: float, kill_after: float) -> bool:
    """Run toy tasks on the cluster with ``run_ray``, killing the worker node once ``kill_after`` seconds
    have passed and a task runs on it (0: never); True when every task finished."""
    os.environ.update({key: cluster.env[key] for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")})
    from analysis.experiments.sweep.ray_executor import run_ray

    attempts = cluster.dir / "attempts.txt"
    attempts.touch()
    work = [(i, task_seconds, str(attempts)) for i in range(tasks)]
    started, outcomes = time.perf_counter(), {}
    on_worker: set[int] = set()  # the worker node's process ids, as seen while it lived
    done = threading.Event()

    def kill_when_busy() -> None:
        while not done.wait(0.1):
            on_worker.update(cluster.worker_pids())
            ran = {int(line.split()[1]) for line in attempts.read_text().splitlines()}
            if time.perf_counter() - started >= kill_after and ran & on_worker:
                n = cluster.kill_worker()
                print(f"{time.perf_counter() - started:6.1f} s  killed the worker node ({n} processes)", flush=True)
                return

    watcher = threading.Thread(target=kill_when_busy, daemon=True)
    if kill_after > 0:
        watcher.start()
    try:
        for task, outcome in run_ray(nap, work, address=cluster.address, threads=1):
            outcomes[task[0]] = outcome
            where = (
                "worker" if isinstance(outcome, tuple) and outcome[1] in on_worker | cluster.worker_pids() else "head"
            )
            what = f"ran on the {where} node" if isinstance(outcome, tuple) else f"FAILED: {outcome!r}"
            print(f"{time.perf_counter() - started:6.1f} s  task {task[0]:2d} {what}", flush=True)
    finally:
        done.set()
    tries = [int(line.split()[0]) for line in attempts.read_text().splitlines()]
    rerun = sorted({i for i in tries if tries.count(i) > 1})
    finished = sorted(i for i, outcome in outcomes.items() if isinstance(outcome, tuple) and outcome[0] == i)
    print(f"{len(finished)}/{tasks} tasks finished in {time.perf_counter() - started:.1f} s; run again: {rerun}")
    return finished == list(range(tasks))


def run_command(cluster: LocalCluster, command: str, grace: float = 60.0) -> int:
    """Run ``command`` ({address} replaced) against the cluster; on Ctrl-C (which reaches it too, it is in
    this script's process group) give it ``grace`` seconds to finish before the cluster is stopped."""
    run = subprocess.Popen(shlex.split(command.replace("{address}", cluster.address)), env=cluster.env)
    try:
        return run.wait()
    except BaseException:
        try:
            run.wait(grace)
        except subprocess.TimeoutExpired:
            run.kill()
        raise


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ip", default="127.0.0.2", help="a loopback address other than 127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="the head's port (default: a free one)")
    parser.add_argument("--head-cpus", type=int, default=1)
    parser.add_argument("--worker-cpus", type=int, default=1)
    parser.add_argument("--run", help="a command to run against the cluster; {address} becomes the head's address")
    parser.add_argument(
        "--kill-worker-after",
        type=float,
        help="seconds into the run (0: never); the demo waits until then and until a task runs on the worker (default 4)",
    )
    parser.add_argument("--tasks", type=int, default=12, help="demo: number of toy tasks")
    parser.add_argument("--task-seconds", type=float, default=2.0, help="demo: how long each toy task sleeps")
    args = parser.parse_args()
    kill_after = args.kill_worker_after if args.kill_worker_after is not None else (4.0 if args.run is None else 0)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))  # so that the cluster is stopped
    with LocalCluster(args.ip, args.port, args.head_cpus, args.worker_cpus) as cluster:
        head, worker = cluster.start_seconds["head"], cluster.start_seconds["worker"]
        print(f"cluster at {cluster.address} ready: head {head:.1f} s, then worker {worker:.1f} s", flush=True)
        if args.run:
            timer = threading.Timer(kill_after, cluster.kill_worker)
            if kill_after > 0:
                timer.start()
            try:
                code = run_command(cluster, args.run)
            finally:
                timer.cancel()
        else:
            code = 0 if demo(cluster, args.tasks, args.task_seconds, kill_after) else 1
        stopping = time.perf_counter()
    print(f"cluster stopped in {time.perf_counter() - stopping:.1f} s; exit code {code}")
    return code


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the cluster is stopped by then
        sys.exit(130)
