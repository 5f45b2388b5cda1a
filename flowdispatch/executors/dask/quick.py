"""Which ops are quick on a dask cluster, and how many batches their nodes go in.

The dask scheduler spends about half a millisecond on every task, whatever
the task does; an op that runs for less than that pays more for being
scheduled than for running. Such ops are *quick*: their independent nodes go
in batches (:meth:`.lower.Lowered.batch`), one task each.

An op is quick when it says so (``@fd.op(quick=True)``), or when its nodes
took under :data:`QUICK` seconds each, on average, in the last run of it in
this process on a dask cluster (:func:`observe`, keyed by the op's pickled
code, so that an op redefined alike is the same op). An op never measured,
or declared ``quick=False``, runs one task per node.

An op never measured, with enough independent nodes in a run to fill batches,
is measured in that run (:func:`probe`): a few of its nodes (:data:`PROBE`
per worker thread) run first, as tasks of their own, with everything that does
not need the op's other nodes; once the probe nodes have ended, their
durations say whether the rest go in batches, and the rest are submitted.
Nodes that join a run as nodes expand (a lazy map's children) are probed alike.

How many batches: at least one per worker thread, so that every thread has
work; then as many rounds of that as keep each batch near :data:`TARGET`
seconds, so that threads finish together (no long tail on one worker) and the
scheduler still sees few tasks.

Examples
--------
>>> batch_count(10_000, 1e-5, threads=2)
2
>>> batch_count(2_000, 1e-3, threads=2)
40
>>> batch_count(3, 1e-5, threads=4)
0
"""

from __future__ import annotations

import collections
import threading
from typing import Any

__all__ = ["PROBE", "QUICK", "TARGET", "batch_count", "measured", "observe", "probe"]

#: An op whose nodes ran under this many seconds each (on average) is quick.
QUICK = 0.005
#: The seconds of work a batch aims at, when there is that much to share.
TARGET = 0.05
#: How many nodes of an op never measured run first, per worker thread, to measure it.
PROBE = 1
#: How many ops' timings are kept (the least recently measured are forgotten).
KEPT = 1024

_seconds: collections.OrderedDict[bytes, float] = collections.OrderedDict()
_lock = threading.Lock()


def observe(timings: dict[bytes, list[float]]) -> None:
    """Keep the mean seconds per node of each op (by pickled code) of a run that ended."""
    with _lock:
        for code, seconds in timings.items():
            if seconds:
                _seconds[code] = sum(seconds) / len(seconds)
                _seconds.move_to_end(code)
        while len(_seconds) > KEPT:
            _seconds.popitem(last=False)


def measured(code: bytes) -> float | None:
    """The mean seconds per node of the op's last measured run here, or ``None``."""
    return _seconds.get(code)


def batch_count(nodes: int, seconds: float, threads: int) -> int:
    """How many batches to cut ``nodes`` independent quick nodes into (0: do not batch).

    Examples
    --------
    >>> batch_count(100, 0.0, threads=4)
    4
    """
    threads = max(1, threads)
    if nodes < 2 * threads:  # a batch of one saves nothing
        return 0
    rounds = int(nodes * seconds / threads / TARGET)
    return threads * max(1, min(rounds, nodes // (2 * threads)))


def probe(groups: dict[tuple[Any, ...], list[str]], threads: int) -> tuple[list[str], list[str]]:
    """The nodes to run first to measure the ops never measured, and the nodes held back.

    ``groups`` are the independent nodes of a run by ``(code, notes, declared,
    depth)`` (see :meth:`.lower.Lowered.batch`). An op declared neither way and
    never measured here, with enough nodes left after the probe to fill
    batches, is probed: :data:`PROBE` nodes per thread (at least two) of its
    shallowest group run first; its other nodes wait for their durations.

    Examples
    --------
    >>> probe({(b"never", (), None, 1): [f"n-{i}" for i in range(8)]}, threads=2)
    (['n-0', 'n-1'], ['n-2', 'n-3', 'n-4', 'n-5', 'n-6', 'n-7'])
    >>> probe({(b"never", (), None, 1): ["n-0", "n-1", "n-2"]}, threads=2)
    ([], [])
    """
    ops: dict[bytes, list[tuple[int, list[str]]]] = {}
    for (code, _, declared, depth), keys in groups.items():
        if declared is None and measured(code) is None:
            ops.setdefault(code, []).append((depth, keys))
    size = max(2, PROBE * threads)
    first: list[str] = []
    later: list[str] = []
    for found in ops.values():
        found.sort(key=lambda group: group[0])
        if batch_count(sum(len(keys) for _, keys in found) - size, 0.0, threads) == 0:
            continue  # too few to batch: one task each, measured for the next run
        first.extend(found[0][1][:size])
        later.extend(found[0][1][size:])
        for _, keys in found[1:]:
            later.extend(keys)
    return first, later
