"""Benchmark: flowdispatch against dask on the same work, in the same run.

Shapes (N tasks of trivial work, so every number is overhead):

* chain: x = inc(x), N times;
* fan:   N independent inc calls, then one sum over all of them;
* tree:  N leaves, then a pairwise add reduction;
* cluster: Dispatcher.jl's "Dask Cluster" at scale: N/5 loads, each processed
  against a reference, rolling windows of three, 2N/5 random comparisons,
  then one reduction (about N tasks).

Columns, per shape and N:

* build µs/node: creating flowdispatch nodes, against ``dask.delayed``
  (skipped where dask.delayed is quadratic and would take minutes);
* sync: flowdispatch build + run on SyncExecutor, against ``dask.get`` running
  the equivalent prebuilt raw dask graph (build not counted for dask);
* threads: build + run on ThreadExecutor against ``dask.threaded.get``.

Then the build of a 4,000-node chain against dask.delayed, and (for
``--processes-sizes``) build + run on ProcessExecutor against
``dask.multiprocessing.get`` of the raw graph, each on a process pool kept
across runs. ``--memory`` adds the peak memory per task.

With ``--dask``, a further table: the same shapes on one ``LocalCluster`` of
two worker processes, flowdispatch's DaskExecutor end to end (build, lower,
run, gather) against ``client.get`` of the prebuilt raw graph and against
``dask.delayed`` + ``client.compute``; then fan-outs of ops that take time
(``--dask-work``: 10,000 of 10 µs, 2,000 of 1 ms, 200 of 50 ms), against raw
``client.get``. Each run on the cluster starts once the scheduler and the
workers have let go of the tasks of the run before it.

Then dynamic workflows on SyncExecutor: a lazy map over N tiny ops (``op.map``
over a node, expanded at run time) against the same static fan-out (built
from a concrete list), and the recursive ``fib(20)`` (each call returns the
nodes of the next two: about 22,000 nodes created at run time), in µs per
node; with ``--dask``, the lazy map against the static fan-out on the
distributed table's cluster too. ``--no-dynamic`` leaves them out.

Ratios below 1 mean flowdispatch is faster. Run ``python benchmarks/run.py
--help`` for options; ``make bench`` runs the default set.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import operator
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import dask
import dask.multiprocessing
import dask.threaded
from dask import delayed

import flowdispatch as fd


def inc(x):
    return x + 1


def add(x, y):
    return x + y


def total(xs):
    return sum(xs)




def add3(x, y, z):
    return x + y + z


def work(i, seconds):
    """``i``, after ``seconds`` of work: spinning below 10 ms (a sleep that short
    oversleeps), else sleeping (a spinning worker would starve the others of the cores)."""
    if seconds >= 0.01:
        time.sleep(seconds)
        return i
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
    return i


def build(shape: str, n: int, lazy: Callable[[Callable], Callable]):
    """The shape, built with ``lazy(f)`` versions of the task functions.

    ``lazy`` is ``fd.op``, ``dask.delayed``, a :class:`Raw` recorder, or the
    identity (which computes the expected value eagerly).
    """
    inc_, add_, add3_, total_ = (lazy(f) for f in (inc, add, add3, total))
    if shape == "chain":
        x = inc_(0)
        for _ in range(n - 1):
            x = inc_(x)
        return x
    if shape == "cluster":  # Dispatcher.jl's "Dask Cluster": load, process, roll, compare, reduce
        rng = random.Random(0)
        loads = [inc_(i) for i in range(max(3, n // 5))]
        processed = [add_(d, loads[0]) for d in loads]
        rolled = [add3_(a, b, c) for a, b, c in zip(processed, processed[1:], processed[2:])]
        compared = [add_(rng.choice(rolled), rng.choice(rolled)) for _ in range(2 * len(loads))]
        return total_(compared)
    leaves = [inc_(i) for i in range(n)]
    if shape == "fan":
        return total_(leaves)
    while len(leaves) > 1:
        leaves = [add_(a, b) for a, b in zip(leaves[::2], leaves[1::2])] + leaves[len(leaves) // 2 * 2:]
    return leaves[0]


class Raw:
    """Records calls as a hand-built raw dask graph ``{"<func>-<n>": (func, *args)}``."""

    def __init__(self) -> None:
        self.dsk: dict = {}
        self.count = itertools.count()

    def __call__(self, fn: Callable) -> Callable:
        def call(*args):
            key = f"{fn.__name__}-{next(self.count)}"
            self.dsk[key] = (fn, *args)
            return key
        return call


def build_fd(shape: str, n: int):
    return build(shape, n, fd.op)


def build_delayed(shape: str, n: int):
    return build(shape, n, lambda f: delayed(f, pure=False))


def build_raw(shape: str, n: int) -> tuple[dict, str]:
    """The equivalent raw dask graph and its target key."""
    raw = Raw()
    key = build(shape, n, raw)
    return raw.dsk, key


def expected(shape: str, n: int) -> int:
    return build(shape, n, lambda f: f)


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(shape: str, n: int, repeat: int, delayed_limit: int,
            threads_limit: int) -> dict[str, float | None]:
    row: dict[str, float | None] = {}
    tasks = len(build_raw(shape, n)[0])
    row["tasks"] = tasks
    row["fd_build"] = best(lambda: build_fd(shape, n), repeat) / tasks * 1e6
    limit = delayed_limit // 4 if shape in ("chain", "fan") else delayed_limit
    row["delayed_build"] = (
        best(lambda: build_delayed(shape, n), 1 if n > 1000 else repeat) / tasks * 1e6
        if n <= limit else None
    )
    dsk, key = build_raw(shape, n)
    want = expected(shape, n)

    def fd_run(executor) -> None:
        assert fd.compute(build_fd(shape, n), executor=executor)[0] == want

    def dask_run(get) -> None:
        assert get(dsk, key) == want

    with fd.SyncExecutor() as sync, fd.ThreadExecutor() as threads:
        row["fd_sync"] = best(lambda: fd_run(sync), repeat) / tasks * 1e6
        row["dask_get"] = best(lambda: dask_run(dask.get), repeat) / tasks * 1e6
        row["fd_threads"] = row["dask_threaded"] = None
        if n <= threads_limit:
            row["fd_threads"] = best(lambda: fd_run(threads), repeat) / tasks * 1e6
            row["dask_threaded"] = best(lambda: dask_run(dask.threaded.get), repeat) / tasks * 1e6
    return row


def best_interleaved(fns: dict[str, Callable[[], object]], repeat: int,
                     client: Any = None) -> dict[str, float]:
    """Best time of each function, taking turns (so that a slow spell of the
    machine hits them alike), after one warm-up round. With a dask ``client``,
    each starts once the cluster has let go of the tasks of the one before
    (see :func:`settled`)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(repeat + 1):
        for name, fn in fns.items():
            if client is not None:
                settled(client)
            gc.collect()
            start = time.perf_counter()
            fn()
            if i:
                times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}


def settled(client: Any, timeout: float = 30.0) -> None:
    """Wait (up to ``timeout`` seconds) till the scheduler and the workers hold no task.

    A run's result comes back before the cluster has forgotten its tasks; a
    run timed next would pay for that clean-up (10,000 tasks of a raw
    ``client.get`` keep the workers busy for a while after it returns).
    """
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not client.run_on_scheduler(_scheduler_tasks) and not any(
                client.run(_worker_tasks).values()):
            return
        time.sleep(0.01)


def _scheduler_tasks(dask_scheduler: Any) -> int:
    return len(dask_scheduler.tasks)


def _worker_tasks(dask_worker: Any) -> int:
    return len(dask_worker.state.tasks)


fd_inc, fd_add, fd_total = fd.op(inc, name="inc"), fd.op(add, name="add"), fd.op(total)


@fd.op
def listing(n):
    return list(range(n))


@fd.op
def fib(n):
    return n if n < 2 else fd_add(fib(n - 1), fib(n - 2))


def lazy_against_static(n: int, repeat: int, executor: Any, client: Any = None
                        ) -> dict[str, float]:
    """Best seconds of a lazy map over ``n`` tiny ops, and of the same static fan-out."""
    def static() -> None:
        assert fd.compute(fd_total(fd_inc.map(list(range(n)))), executor=executor) == (
            n * (n + 1) // 2,)

    def lazy() -> None:
        assert fd.compute(fd_total(fd_inc.map(listing(n))), executor=executor) == (
            n * (n + 1) // 2,)

    return best_interleaved({"static": static, "lazy": lazy}, repeat, client)


def dynamic_table(n: int, repeat: int, dask_too: bool = False) -> list[str]:
    """A lazy map over ``n`` tiny ops against the static fan-out, on sync (and with
    ``dask_too`` on the distributed table's cluster), and fib(20) on sync."""
    with fd.SyncExecutor() as sync:
        times = lazy_against_static(n, repeat, sync)
        res = fd.run(fib(20), executor=sync)
        nodes = len(res)
        fib_time = best(lambda: fd.compute(fib(20), executor=sync), repeat)
    lines = ["", "Dynamic workflows (build + run, µs per node):", "",
             "| workload | nodes | fd µs/node | yardstick | ratio |", "|---|---|---|---|---|",
             lazy_row(f"lazy map over {n:,} on sync", n, times),
             f"| fib(20), recursive, on sync | {nodes:,} | {fmt(fib_time / nodes * 1e6)} | "
             "target 50 | — |"]
    if dask_too:
        from distributed import Client

        with local_cluster() as cluster, Client(cluster) as client, \
                fd.DaskExecutor(client=client) as executor:
            times = lazy_against_static(n, repeat, executor, client)
        lines.append(lazy_row(f"lazy map over {n:,} on dask (2 workers × 1 thread)", n, times))
    print("\n".join(lines), flush=True)
    return lines


def lazy_row(label: str, n: int, times: dict[str, float]) -> str:
    """A row of the dynamic table: the lazy map against the static fan-out."""
    mine, theirs = times["lazy"] / (n + 3) * 1e6, times["static"] / (n + 2) * 1e6
    return (f"| {label} | {n + 3:,} | {fmt(mine)} | static fan-out {fmt(theirs)} | "
            f"{times['lazy'] / times['static']:.2f}× |")


def local_cluster() -> Any:
    """The distributed tables' cluster: 2 worker processes × 1 thread on 127.0.0.1,
    without root-task queuing."""
    import dask.config
    from distributed import LocalCluster

    with dask.config.set({"distributed.scheduler.worker-saturation": float("inf")}):
        return LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1",
                            dashboard_address="127.0.0.1:0")


def measure_dask(client, shape: str, n: int, repeat: int, delayed_limit: int) -> dict:
    dsk, key = build_raw(shape, n)
    tasks = len(dsk)
    want = expected(shape, n)
    limit = delayed_limit // 4 if shape in ("chain", "fan") else delayed_limit
    with fd.DaskExecutor(client=client) as executor:
        fns = {
            "fd": lambda: fd.compute(build_fd(shape, n), executor=executor)[0] == want or fail(),
            "raw": lambda: client.get(dsk, key) == want or fail(),
        }
        if n <= limit:
            fns["delayed"] = lambda: client.compute(build_delayed(shape, n)).result() == want or fail()
        best = best_interleaved(fns, repeat, client)
    return {"tasks": tasks, "delayed": None} | {k: v / tasks * 1e6 for k, v in best.items()}


def measure_work(client, n: int, seconds: float, repeat: int) -> dict:
    """A fan-out of ``n`` ops of ``seconds`` each, then a sum: fd against raw ``client.get``."""
    dsk: dict = {f"work-{i}": (work, i, seconds) for i in range(n)}
    dsk["total-0"] = (total, list(dsk))
    want = sum(range(n))

    def fd_run() -> None:
        step = fd.op(work)
        assert fd.compute(fd.op(total)([step(i, seconds) for i in range(n)]),
                          executor=executor)[0] == want

    with fd.DaskExecutor(client=client) as executor:
        best = best_interleaved({"fd": fd_run,
                                 "raw": lambda: client.get(dsk, "total-0") == want or fail()},
                                repeat, client)
    return {k: v / len(dsk) * 1e6 for k, v in best.items()}


def fail():
    raise AssertionError("wrong result")


def processes_table(sizes: list[int], shapes: list[str], repeat: int) -> list[str]:
    """ProcessExecutor against dask.multiprocessing.get, each on a pool kept across runs
    (forkserver, one process per core)."""
    import concurrent.futures as cf
    import multiprocessing

    lines = [
        "",
        f"Processes: a pool of {os.cpu_count()} processes (forkserver), kept across runs; "
        "µs per task, best of " + str(repeat),
        "",
        "| shape | N | tasks | processes fd (build+run) | dask.multiprocessing.get (run) "
        "| fd ÷ dask |",
        "|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    context = multiprocessing.get_context("forkserver")
    with fd.ProcessExecutor() as executor, \
            cf.ProcessPoolExecutor(os.cpu_count(), mp_context=context) as pool:
        for shape in shapes:
            for n in sizes:
                dsk, key = build_raw(shape, n)
                want = expected(shape, n)
                best = best_interleaved({
                    "fd": lambda: fd.compute(build_fd(shape, n), executor=executor)[0] == want
                    or fail(),
                    # unoptimized, as the other schedulers run it (its chain fusion
                    # recurses once per link and fails on a 1,000-link chain)
                    "dask": lambda: dask.multiprocessing.get(
                        dsk, key, pool=pool, optimize_graph=False) == want or fail(),
                }, repeat)
                mine, theirs = (best[k] / len(dsk) * 1e6 for k in ("fd", "dask"))
                line = (f"| {shape} | {n:,} | {len(dsk):,} | {fmt(mine)} | {fmt(theirs)} | "
                        f"{ratio(mine, theirs)} |")
                lines.append(line)
                print(line, flush=True)
    return lines


def chain_4k(repeat: int) -> list[str]:
    """The build of a 4,000-node chain, against dask.delayed (the issue's yardstick)."""
    mine = best(lambda: build_fd("chain", 4000), repeat) / 4000 * 1e6
    theirs = best(lambda: build_delayed("chain", 4000), repeat) / 4000 * 1e6
    lines = ["", f"Build of a 4,000-node chain: fd {fmt(mine)} µs/node, dask.delayed "
                 f"{fmt(theirs)} µs/node, fd ÷ delayed {ratio(mine, theirs)}"]
    print("\n".join(lines), flush=True)
    return lines


def dask_table(sizes: list[int], shapes: list[str], repeat: int, delayed_limit: int,
               chain_limit: int, work: list[tuple[int, float]] | None = None) -> list[str]:
    from distributed import Client

    cluster = local_cluster()
    lines = [
        "",
        "Distributed: one LocalCluster, 2 worker processes x 1 thread, worker-saturation inf; "
        "µs per task, end to end",
        "",
        "| shape | N | tasks | fd DaskExecutor | client.get (raw) | fd ÷ raw | delayed + "
        "client.compute | fd ÷ delayed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    with cluster, Client(cluster) as client:
        for shape in shapes:
            for n in sizes:
                if shape == "chain" and n > chain_limit:
                    continue  # unfused, a chain step costs ~6 ms: 10k steps take a minute a run
                r = measure_dask(client, shape, n, repeat, delayed_limit)
                line = (f"| {shape} | {n:,} | {r['tasks']:,} | {fmt(r['fd'])} | {fmt(r['raw'])} | "
                        f"{ratio(r['fd'], r['raw'])} | {fmt(r['delayed'])} | "
                        f"{ratio(r['fd'], r['delayed'])} |")
                lines.append(line)
                print(line, flush=True)
        for n, seconds in work or []:
            r = measure_work(client, n, seconds, repeat)
            line = (f"| fan of {seconds * 1e6:,g} µs ops | {n:,} | {n + 1:,} | {fmt(r['fd'])} | "
                    f"{fmt(r['raw'])} | {ratio(r['fd'], r['raw'])} | skip | — |")
            lines.append(line)
            print(line, flush=True)
    return lines


def memory_child(shape: str, n: int, engine: str) -> None:
    """In a fresh interpreter: print the peak memory added per task (bytes) by one engine."""
    gc.collect()
    base = peak_rss()
    if engine == "fd-sync":
        assert fd.compute(build_fd(shape, n), executor="sync")[0] == expected(shape, n)
    else:
        dsk, key = build_raw(shape, n)
        assert dask.get(dsk, key) == expected(shape, n)
    peak = peak_rss()
    tasks = len(build_raw(shape, n)[0])
    print((peak - base) / tasks)


def peak_rss() -> int:
    """This process's peak resident memory in bytes: Linux's VmHWM, which starts afresh
    with the process (``ru_maxrss`` may carry over the parent's peak), else ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_table(sizes: list[int], shapes: list[str]) -> list[str]:
    import subprocess

    def child(shape: str, n: int, engine: str) -> float:
        out = subprocess.run([sys.executable, __file__, "--memory-child", shape, str(n), engine],
                             capture_output=True, text=True, check=True, timeout=1800)
        return float(out.stdout.strip().splitlines()[-1]) / 1024

    lines = [
        "",
        "Peak memory added per task, KB (build + run, each in a fresh interpreter; "
        "dask.get: building the raw graph + running it)",
        "",
        "| shape | N | fd sync | dask.get | fd ÷ dask.get |",
        "|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for shape in shapes:
        for n in sizes:
            mine, theirs = child(shape, n, "fd-sync"), child(shape, n, "dask-get")
            line = f"| {shape} | {n:,} | {mine:.2f} | {theirs:.2f} | {ratio(mine, theirs)} |"
            lines.append(line)
            print(line, flush=True)
    return lines


def fmt(x: float | None) -> str:
    return "skip" if x is None else (f"{x:.2f}" if x < 10 else f"{x:.1f}")


def ratio(a: float | None, b: float | None) -> str:
    return "—" if a is None or not b else f"{a / b:.2f}×"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="comma-separated N")
    parser.add_argument("--shapes", default="chain,fan,tree,cluster")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    parser.add_argument("--delayed-limit", type=int, default=40000,
                        help="largest N for dask.delayed builds (chain and fan: a quarter)")
    parser.add_argument("--dask", action="store_true", help="add the distributed table")
    parser.add_argument("--no-local", action="store_true", help="leave out the local table")
    parser.add_argument("--threads-limit", type=int, default=100000,
                        help="largest N for the threads columns")
    parser.add_argument("--processes-sizes", default="1000,10000",
                        help="comma-separated N for the process-pool table ('' to leave it out)")
    parser.add_argument("--memory", default="",
                        help="comma-separated N for the peak-memory table (e.g. 100000,1000000)")
    parser.add_argument("--memory-child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--dask-sizes", default="1000,10000")
    parser.add_argument("--dask-shapes", default="fan,tree,cluster,chain")
    parser.add_argument("--dask-chain-limit", type=int, default=1000,
                        help="largest N for the chain in the distributed table")
    parser.add_argument("--no-dynamic", action="store_true",
                        help="leave out the dynamic-workflow table")
    parser.add_argument("--dynamic-size", type=int, default=10000,
                        help="N of the lazy map in the dynamic-workflow table")
    parser.add_argument("--dask-work", default="10000:0.00001,2000:0.001,200:0.05",
                        help="fan-outs of ops that work: comma-separated N:seconds ('' for none)")
    parser.add_argument("--out", help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    if args.memory_child:
        shape, n, engine = args.memory_child
        memory_child(shape, int(n), engine)
        return 0
    sizes = [int(s) for s in args.sizes.split(",")]
    shapes = args.shapes.split(",")
    lines = [
        f"flowdispatch {fd.__version__}, dask {dask.__version__}, Python "
        f"{platform.python_version()}, {platform.machine()}, {platform.processor() or '?'}; "
        "µs per task (per node for builds), best of "
        f"{args.repeat}",
        "",
        "| shape | N | tasks | build fd | build delayed | fd ÷ delayed | sync fd (build+run) "
        "| dask.get (run) | fd ÷ dask.get | threads fd (build+run) | dask.threaded.get (run) "
        "| fd ÷ threaded |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    if args.no_local:
        del lines[1:]
    print("\n".join(lines), flush=True)
    for shape in [] if args.no_local else shapes:
        for n in sizes:
            repeat = args.repeat if n <= 10000 else 1
            r = measure(shape, n, repeat, args.delayed_limit, args.threads_limit)
            line = (
                f"| {shape} | {n:,} | {r['tasks']:,} | {fmt(r['fd_build'])} | "
                f"{fmt(r['delayed_build'])} | {ratio(r['fd_build'], r['delayed_build'])} | "
                f"{fmt(r['fd_sync'])} | {fmt(r['dask_get'])} | {ratio(r['fd_sync'], r['dask_get'])} | "
                f"{fmt(r['fd_threads'])} | {fmt(r['dask_threaded'])} | "
                f"{ratio(r['fd_threads'], r['dask_threaded'])} |"
            )
            lines.append(line)
            print(line, flush=True)
    if "chain" in shapes and not args.no_local:
        lines += chain_4k(args.repeat)
    if not args.no_dynamic:
        lines += dynamic_table(args.dynamic_size, args.repeat, dask_too=args.dask)
    if args.processes_sizes:
        lines += processes_table([int(s) for s in args.processes_sizes.split(",")], shapes,
                                 args.repeat)
    if args.memory:
        lines += memory_table([int(s) for s in args.memory.split(",")], shapes)
    if args.dask:
        lines += dask_table([int(s) for s in args.dask_sizes.split(",")],
                            args.dask_shapes.split(","), args.repeat, args.delayed_limit,
                            args.dask_chain_limit,
                            [(int(n), float(t)) for n, t in
                             (w.split(":") for w in args.dask_work.split(",") if w)])
    if args.out:
        with open(args.out, "w") as f:
            f.write("# Benchmark results\n\n" + "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
