"""Chaos: flowdispatch next to raw dask on a real cluster whose workers keep dying.

A workload is ``groups`` × ``fan_in`` leaf ops, one reducing op per group of
``fan_in`` leaves, and one final op over the groups (5,051 nodes for 50 × 100);
every op sleeps 20 ms. Each runs on a cluster started here with the command
line tools, on 127.0.0.1: ``dask scheduler`` and ``dask worker`` processes
with nannies (2 workers × 2 threads by default; ``allowed-failures`` raised so
that churn never turns into ``KilledWorker``). A driver process computes the
final value, once with flowdispatch (``fd.compute`` on ``DaskExecutor``, ops
declared ``cache=True``, a fresh cache folder per run) and once with raw dask
(``client.get`` of the equivalent task graph), first without faults, then
while a worker process is SIGKILLed every ``period`` seconds: a random one of
those up at least 3 s, never the last one alive; its nanny starts it again.

Every op run appends a line to a log as it starts, so a run's attempts per op (mean over
the graph's nodes, and max) count every execution, also those that died with
their worker. A run that does not finish in ``timeout`` seconds is stopped
(its driver killed) and counted "not done"; its attempts are then partial.
The table prints completion, the time against the fault-free time of the
same executor, kills and attempts per op. Every process started here is
stopped at the end, also on Ctrl-C.

Run ``python benchmarks/chaos.py --help`` for options; ``make chaos`` runs
the workloads of the design goals (5,051 nodes with a kill every 5 s, and
10,101 nodes with a kill every 15 s).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowdispatch.testing import stop_process_trees

HERE = Path(__file__).resolve().parent
#: How long each op sleeps, in seconds.
OP_SECONDS = 0.02
#: A worker is killed only once it has been up this long, in seconds.
MIN_UPTIME = 3.0
#: Seconds to wait for the cluster to start, or for its processes to stop.
STARTUP, STOP = 60.0, 15.0


# -- the ops (module level: the workers import this module) --------------------------------
def _note(log: str, name: str) -> None:
    """Append ``name`` to ``log`` in one write (atomic for a short line)."""
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{name}\n".encode())
    finally:
        os.close(fd)


def leaf(i: int, log: str) -> int:
    """Leaf ``i``: 20 ms of work, noted in ``log`` as it starts; its value is ``i``."""
    _note(log, f"L{i}")
    time.sleep(OP_SECONDS)
    return i


def reduce_(values: list[int], name: str, log: str) -> int:
    """The sum of ``values`` after 20 ms of work, noted in ``log`` as ``name`` as it starts
    (a string that is no task's key: dask would take it for a reference to that task)."""
    _note(log, name)
    time.sleep(OP_SECONDS)
    return sum(values)


# -- the driver: one computation, in a process of its own ---------------------------------
def _flowdispatch(address: str, groups: int, fan_in: int, log: str, cache: str) -> int:
    """The workload with flowdispatch: cached ops, ``fd.compute`` on the cluster."""
    import flowdispatch as fd
    from flowdispatch.executors.dask import DaskExecutor

    fd_leaf = fd.op(leaf, name="leaf", cache=True)
    fd_reduce = fd.op(reduce_, name="reduce", cache=True)
    sums = [fd_reduce([fd_leaf(g * fan_in + i, log) for i in range(fan_in)], f"R{g}", log)
            for g in range(groups)]
    final = fd_reduce(sums, "F", log)
    with fd.config.set(cache_dir=cache), DaskExecutor(address=address) as executor:
        (value,) = fd.compute(final, executor=executor)
    return int(value)


def _dask(address: str, groups: int, fan_in: int, log: str) -> int:
    """The workload with raw dask: one task graph, ``client.get`` of its final key."""
    from distributed import Client

    dsk: dict[str, Any] = {}
    for g in range(groups):
        names = [f"leaf-{g * fan_in + i}" for i in range(fan_in)]
        dsk.update((name, (leaf, g * fan_in + i, log)) for i, name in enumerate(names))
        dsk[f"reduce-{g}"] = (reduce_, names, f"R{g}", log)  # notes are never keys
    dsk["final"] = (reduce_, [f"reduce-{g}" for g in range(groups)], "F", log)
    with Client(address, set_as_default=False) as client:
        return int(client.get(dsk, "final"))


def drive(argv: list[str]) -> None:
    """Compute one workload (``executor address groups fan_in log cache``); print JSON."""
    executor, address, groups, fan_in, log, cache = argv
    start = time.perf_counter()
    if executor == "flowdispatch":
        value = _flowdispatch(address, int(groups), int(fan_in), log, cache)
    else:
        value = _dask(address, int(groups), int(fan_in), log)
    print(json.dumps({"value": value, "seconds": time.perf_counter() - start}), flush=True)


# -- the cluster ----------------------------------------------------------------------------
def _die_with_parent() -> None:  # pragma: no cover - runs in the child, before exec
    """Linux: have the child terminated if this process dies without stopping it."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _spawn(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    """A child in a session of its own (Ctrl-C reaches only this process, which stops it)."""
    out = open(log, "wb")  # noqa: SIM115 - the child holds it; closed when this exits
    linux = sys.platform.startswith("linux")
    return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True, preexec_fn=_die_with_parent if linux else None)


def _dask_command(name: str) -> list[str]:
    """The command line of ``dask <name>`` for this interpreter."""
    script = Path(sys.executable).with_name("dask")
    return [str(script), name] if script.exists() else [
        sys.executable, "-m", f"distributed.cli.dask_{name}"]


@dataclass
class Cluster:
    """A ``dask scheduler`` and ``workers`` ``dask worker`` processes (nannies) on 127.0.0.1."""

    folder: Path
    workers: int = 2
    threads: int = 2
    scheduler: subprocess.Popen | None = None
    nannies: list[subprocess.Popen] = field(default_factory=list)
    address: str = ""

    def env(self) -> dict[str, str]:
        """The environment of the cluster's processes and of the drivers."""
        root = str(HERE.parent)
        paths = [str(HERE), root, os.environ.get("PYTHONPATH", "")]
        return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p),
                "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "10000"}

    def start(self) -> None:
        """Start the scheduler and the workers; wait until they are all connected."""
        info = self.folder / "scheduler.json"
        self.scheduler = _spawn([*_dask_command("scheduler"), "--host", "127.0.0.1", "--port",
                                 "0", "--no-dashboard", "--scheduler-file", str(info)],
                                self.folder / "scheduler.log", self.env())
        deadline = time.monotonic() + STARTUP
        while not self.address:
            with contextlib.suppress(OSError, ValueError, KeyError):
                self.address = json.loads(info.read_text())["address"]
            if self.scheduler.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the dask scheduler did not start; see {self.folder}")
            time.sleep(0.05)
        for i in range(self.workers):
            self.nannies.append(_spawn(
                [*_dask_command("worker"), self.address, "--host", "127.0.0.1", "--nthreads",
                 str(self.threads), "--nanny", "--no-dashboard", "--death-timeout", "60",
                 "--name", f"worker-{i}", "--local-directory", str(self.folder / f"w{i}")],
                self.folder / f"worker-{i}.log", self.env()))
        self.wait_for_workers()

    def wait_for_workers(self) -> None:
        """Wait (bounded) until every worker is connected and the scheduler holds no task."""
        from distributed import Client

        with Client(self.address, set_as_default=False, timeout=STARTUP) as client:
            client.wait_for_workers(self.workers, timeout=STARTUP)
            deadline = time.monotonic() + STARTUP
            while client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)):
                if time.monotonic() > deadline:
                    raise RuntimeError("the scheduler still holds tasks of an earlier run")
                time.sleep(0.1)

    def worker_processes(self) -> list[Any]:
        """The live worker processes (the nannies' children that run a worker)."""
        import psutil

        found = []
        for nanny in self.nannies:
            with contextlib.suppress(psutil.Error):
                for child in psutil.Process(nanny.pid).children():
                    if child.is_running() and "spawn_main" in " ".join(child.cmdline()):
                        found.append(child)
        return found

    def stop(self) -> None:
        """Terminate the workers (with their nannies), then the scheduler; kill what is
        left after a bounded wait."""
        groups = [self.nannies, [self.scheduler] if self.scheduler else []]
        for group in groups:
            stop_process_trees(group, STOP)
        self.nannies, self.scheduler = [], None


# -- the killer -------------------------------------------------------------------------------
class Killer(threading.Thread):
    """SIGKILLs a random worker process every ``period`` seconds: one of those up at least
    :data:`MIN_UPTIME` seconds, and only while another worker is alive."""

    def __init__(self, cluster: Cluster, period: float, seed: int):
        super().__init__(name="chaos-killer", daemon=True)
        self.cluster, self.period = cluster, period
        self.random = random.Random(seed)
        self.stopping = threading.Event()
        self.kills = 0

    def run(self) -> None:
        """Kill until :meth:`stop`."""
        while not self.stopping.wait(self.period):
            alive = self.cluster.worker_processes()
            ready = [p for p in alive if time.time() - p.create_time() >= MIN_UPTIME]
            if len(alive) < 2 or not ready:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.random.choice(ready).pid, signal.SIGKILL)
                self.kills += 1

    def stop(self) -> None:
        """Stop killing; wait (bounded) for the thread to end."""
        self.stopping.set()
        self.join(STOP)


# -- one measurement ----------------------------------------------------------------------------
@dataclass
class Outcome:
    """One computation: finished or not, its seconds, kills, and runs per op."""

    done: bool
    seconds: float
    kills: int
    runs: Counter


def measure(cluster: Cluster, executor: str, groups: int, fan_in: int,
            period: float | None, timeout: float, seed: int) -> Outcome:
    """Run the workload once in a driver process, with a killer when ``period`` is set."""
    # a run stopped at its timeout leaves tasks on the workers, which may still write
    with tempfile.TemporaryDirectory(prefix="chaos-", ignore_cleanup_errors=True) as scratch:
        log, cache = os.path.join(scratch, "runs.log"), os.path.join(scratch, "cache")
        args = [sys.executable, str(Path(__file__).resolve()), "--drive", executor,
                cluster.address, str(groups), str(fan_in), log, cache]
        driver = _spawn(args, Path(scratch) / "driver.out", cluster.env())
        killer = Killer(cluster, period, seed) if period else None
        start = time.perf_counter()
        if killer:
            killer.start()
        try:
            driver.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        finally:
            if killer:
                killer.stop()
            stop_process_trees([driver], STOP)
        seconds = time.perf_counter() - start
        report = _report(Path(scratch) / "driver.out")
        done = report is not None and report["value"] == _expected(groups, fan_in)
        if done:
            seconds = report["seconds"]  # type: ignore[index]
        elif driver.returncode not in (None, 0, -signal.SIGTERM, -signal.SIGKILL):
            tail = (Path(scratch) / "driver.out").read_text(errors="replace")[-2000:]
            print(f"{executor} driver failed:\n{tail}", file=sys.stderr, flush=True)
        runs = Counter(Path(log).read_text().split()) if os.path.exists(log) else Counter()
    cluster.wait_for_workers()
    return Outcome(done, seconds, killer.kills if killer else 0, runs)


def _report(path: Path) -> dict | None:
    """The driver's report: the last JSON object it printed, if any."""
    for line in reversed(path.read_text(errors="replace").splitlines()):
        with contextlib.suppress(ValueError):
            found = json.loads(line)
            if isinstance(found, dict):
                return found
    return None


def _expected(groups: int, fan_in: int) -> int:
    """The workload's final value: the sum of the leaves' indices."""
    leaves = groups * fan_in
    return leaves * (leaves - 1) // 2


# -- the table ------------------------------------------------------------------------------------
HEADER = ("| nodes | kill every | executor | completion | fault-free | with kills | ratio | kills "
          "| attempts per op (mean) | max |\n|---|---|---|---|---|---|---|---|---|---|")


def row(nodes: int, period: float, executor: str, calm: Outcome, chaos: Outcome) -> str:
    """One line of the table: ``chaos`` against the fault-free ``calm``."""
    mean = sum(chaos.runs.values()) / nodes
    most = max(chaos.runs.values(), default=0)
    if chaos.done:
        completion, ratio = "done", f"{chaos.seconds / calm.seconds:.2f}x"
    else:
        completion, ratio = f"not done in {chaos.seconds:.0f} s", "-"
    calm_text = f"{calm.seconds:.1f} s" if calm.done else "not done"
    mean_text = f"{mean:.2f}" if chaos.done else f"{mean:.2f} (partial)"
    return (f"| {nodes:,} | {period:g} s | {executor} | {completion} | {calm_text} | "
            f"{chaos.seconds:.1f} s | {ratio} | {chaos.kills} | {mean_text} | {most} |")


def parse(argv: list[str]) -> argparse.Namespace:
    """The command line's options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default="50x100@5,100x100@15",
                        help="comma-separated GROUPSxFAN_IN@PERIOD (default: %(default)s)")
    parser.add_argument("--executors", default="flowdispatch,dask")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds before a computation counts as not done")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    return parser.parse_args(argv)


def main(argv: list[str]) -> None:
    """Run the workloads (see :func:`parse`) and print the table as it fills."""
    args = parse(argv)
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="chaos-cluster-")), args.workers, args.threads)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in the background
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        cluster.start()
        print(f"cluster: 1 scheduler, {args.workers} workers x {args.threads} threads "
              f"(nannies) on 127.0.0.1; ops of {OP_SECONDS * 1000:g} ms", flush=True)
        print(HEADER, flush=True)
        for spec in args.workloads.split(","):
            shape, _, period = spec.partition("@")
            groups, fan_in = (int(n) for n in shape.split("x"))
            nodes = groups * fan_in + groups + 1
            for executor in args.executors.split(","):
                calm = measure(cluster, executor, groups, fan_in, None, args.timeout, args.seed)
                chaos = measure(cluster, executor, groups, fan_in, float(period), args.timeout,
                                args.seed)
                print(row(nodes, float(period), executor, calm, chaos), flush=True)
    finally:
        cluster.stop()
        shutil.rmtree(cluster.folder, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--drive"]:
        import chaos  # this file as a module the workers can import (not __main__)

        chaos.drive(sys.argv[2:])
    else:
        try:
            main(sys.argv[1:])
        except KeyboardInterrupt:
            print("interrupted: every process started here was stopped", file=sys.stderr)
            sys.exit(130)
