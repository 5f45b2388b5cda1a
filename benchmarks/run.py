"""Benchmark: flowdispatch against dask on the same work, in the same run.

Shapes (N tasks of trivial work, so every number is overhead):

* chain: x = inc(x), N times;
* fan:   N independent inc calls, then one sum over all of them;
* tree:  N leaves, then a pairwise add reduction.

Columns, per shape and N:

* build µs/node: creating flowdispatch nodes, against ``dask.delayed``
  (skipped where dask.delayed is quadratic and would take minutes);
* sync: flowdispatch build + run on SyncExecutor, against ``dask.get`` running
  the equivalent prebuilt raw dask graph (build not counted for dask);
* threads: build + run on ThreadExecutor against ``dask.threaded.get``.

With ``--dask``, a second table: the same shapes on one ``LocalCluster`` of
two worker processes, flowdispatch's DaskExecutor end to end (build, lower,
run, gather) against ``client.get`` of the prebuilt raw graph and against
``dask.delayed`` + ``client.compute``.

Ratios below 1 mean flowdispatch is faster. Run ``python benchmarks/run.py
--help`` for options; ``make bench`` runs the default set.
"""

from __future__ import annotations

import argparse
import gc
import operator
import platform
import statistics
import sys
import time
from collections.abc import Callable

import dask
import dask.threaded
from dask import delayed

import flowdispatch as fd


def inc(x):
    return x + 1


def add(x, y):
    return x + y


def total(xs):
    return sum(xs)


fd_inc, fd_add, fd_total = fd.op(inc), fd.op(add), fd.op(total)


def build(shape: str, n: int, inc_, add_, total_):
    """The shape built with three lazy callables (flowdispatch ops or dask.delayed)."""
    if shape == "chain":
        x = inc_(0)
        for _ in range(n - 1):
            x = inc_(x)
        return x
    leaves = [inc_(i) for i in range(n)]
    if shape == "fan":
        return total_(leaves)
    while len(leaves) > 1:
        leaves = [add_(a, b) for a, b in zip(leaves[::2], leaves[1::2])] + leaves[len(leaves) // 2 * 2:]
    return leaves[0]


def build_fd(shape: str, n: int):
    return build(shape, n, fd_inc, fd_add, fd_total)


def build_delayed(shape: str, n: int):
    return build(shape, n, *(delayed(f, pure=False) for f in (inc, add, total)))


def build_raw(shape: str, n: int) -> tuple[dict, str]:
    """The equivalent hand-built dask graph ``{key: (func, *args)}``."""
    if shape == "chain":
        dsk = {"inc-0": (inc, 0)}
        for i in range(1, n):
            dsk[f"inc-{i}"] = (inc, f"inc-{i - 1}")
        return dsk, f"inc-{n - 1}"
    dsk = {f"inc-{i}": (inc, i) for i in range(n)}
    if shape == "fan":
        dsk["total-0"] = (total, [f"inc-{i}" for i in range(n)])
        return dsk, "total-0"
    level = [f"inc-{i}" for i in range(n)]
    count = 0
    while len(level) > 1:
        nxt = []
        for a, b in zip(level[::2], level[1::2]):
            key = f"add-{count}"
            count += 1
            dsk[key] = (add, a, b)
            nxt.append(key)
        level = nxt + level[len(level) // 2 * 2:]
    return dsk, level[0]


def expected(shape: str, n: int) -> int:
    return n if shape == "chain" else n * (n + 1) // 2


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(shape: str, n: int, repeat: int, delayed_limit: int) -> dict[str, float | None]:
    row: dict[str, float | None] = {}
    tasks = {"chain": n, "fan": n + 1, "tree": 2 * n - 1}[shape]
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

    with fd.SyncExecutor() as sync, fd.ThreadExecutor() as threads:
        row["fd_sync"] = best(lambda: fd_run(sync), repeat) / tasks * 1e6
        row["dask_get"] = best(lambda: dask.get(dsk, key), repeat) / tasks * 1e6
        row["fd_threads"] = best(lambda: fd_run(threads), repeat) / tasks * 1e6
        row["dask_threaded"] = best(lambda: dask.threaded.get(dsk, key), repeat) / tasks * 1e6
    assert dask.get(dsk, key) == want
    return row


def measure_dask(client, shape: str, n: int, repeat: int, delayed_limit: int) -> dict:
    tasks = {"chain": n, "fan": n + 1, "tree": 2 * n - 1}[shape]
    want = expected(shape, n)
    dsk, key = build_raw(shape, n)
    row: dict[str, float | None] = {"tasks": tasks}
    with fd.DaskExecutor(client=client) as executor:
        def fd_run() -> None:
            assert fd.compute(build_fd(shape, n), executor=executor)[0] == want

        row["fd"] = best(fd_run, repeat) / tasks * 1e6
    row["raw"] = best(lambda: client.get(dsk, key), repeat) / tasks * 1e6
    limit = delayed_limit // 4 if shape in ("chain", "fan") else delayed_limit
    row["delayed"] = (
        best(lambda: client.compute(build_delayed(shape, n)).result(), repeat) / tasks * 1e6
        if n <= limit else None
    )
    return row


def dask_table(sizes: list[int], shapes: list[str], repeat: int, delayed_limit: int) -> list[str]:
    import dask.config
    from distributed import Client, LocalCluster

    with dask.config.set({"distributed.scheduler.worker-saturation": float("inf")}):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1",
                               dashboard_address="127.0.0.1:0")
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
                r = measure_dask(client, shape, n, repeat if n <= 1000 else 1, delayed_limit)
                line = (f"| {shape} | {n:,} | {r['tasks']:,} | {fmt(r['fd'])} | {fmt(r['raw'])} | "
                        f"{ratio(r['fd'], r['raw'])} | {fmt(r['delayed'])} | "
                        f"{ratio(r['fd'], r['delayed'])} |")
                lines.append(line)
                print(line, flush=True)
    return lines


def memory_child(shape: str, n: int, engine: str) -> None:
    """In a fresh interpreter: print the peak memory added per task (bytes) by one engine."""
    import resource

    gc.collect()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if engine == "fd-sync":
        assert fd.compute(build_fd(shape, n), executor="sync")[0] == expected(shape, n)
    else:
        dsk, key = build_raw(shape, n)
        assert dask.get(dsk, key) == expected(shape, n)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tasks = {"chain": n, "fan": n + 1, "tree": 2 * n - 1}[shape]
    print((peak - base) * 1024 / tasks)


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
    return "—" if a is None or b is None else f"{a / b:.2f}×"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="comma-separated N")
    parser.add_argument("--shapes", default="chain,fan,tree")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    parser.add_argument("--delayed-limit", type=int, default=40000,
                        help="largest N for dask.delayed builds (chain and fan: a quarter)")
    parser.add_argument("--dask", action="store_true", help="add the distributed table")
    parser.add_argument("--no-local", action="store_true", help="leave out the local table")
    parser.add_argument("--memory", default="",
                        help="comma-separated N for the peak-memory table (e.g. 100000,1000000)")
    parser.add_argument("--memory-child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--dask-sizes", default="1000,10000")
    parser.add_argument("--dask-shapes", default="fan,tree")
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
            r = measure(shape, n, repeat, args.delayed_limit)
            line = (
                f"| {shape} | {n:,} | {r['tasks']:,} | {fmt(r['fd_build'])} | "
                f"{fmt(r['delayed_build'])} | {ratio(r['fd_build'], r['delayed_build'])} | "
                f"{fmt(r['fd_sync'])} | {fmt(r['dask_get'])} | {ratio(r['fd_sync'], r['dask_get'])} | "
                f"{fmt(r['fd_threads'])} | {fmt(r['dask_threaded'])} | "
                f"{ratio(r['fd_threads'], r['dask_threaded'])} |"
            )
            lines.append(line)
            print(line, flush=True)
    if args.memory:
        lines += memory_table([int(s) for s in args.memory.split(",")], shapes)
    if args.dask:
        lines += dask_table([int(s) for s in args.dask_sizes.split(",")],
                            args.dask_shapes.split(","), args.repeat, args.delayed_limit)
    if args.out:
        with open(args.out, "w") as f:
            f.write("# Benchmark results\n\n" + "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
