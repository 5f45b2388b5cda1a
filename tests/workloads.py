"""Dispatcher.jl's example workloads, "Dask Do" and "Dask Cluster", shared by the tests.

The ops are at module level, so process pools and dask workers import them
by reference (the dask tests' workers have this folder on their path).
"""

from __future__ import annotations

import random
import time

import flowdispatch as fd

# -- "Dask Do" ---------------------------------------------------------------------------------


@fd.op
def slowinc(x, delay=0.001):
    time.sleep(delay)
    return x + 1


@fd.op
def slowadd(x, y, delay=0.001):
    time.sleep(delay)
    return x + y


@fd.op
def slowsum(*xs, delay=0.001):
    time.sleep(delay)
    return sum(xs)


def dask_do(delay: float = 0.001) -> tuple[list[fd.Node], fd.Node]:
    """``(A, result)``: three slow increments, their sums with 10 and 100, and the total (357)."""
    A = slowinc.map([1, 2, 3], delay=fd.unmapped(delay))
    B = slowadd.map(A, fd.unmapped(10), delay=fd.unmapped(delay))
    C = slowadd.map(A, fd.unmapped(100), delay=fd.unmapped(delay))
    return A, slowsum(*A) + slowsum(*B) + slowsum(*C)


# -- "Dask Cluster" ----------------------------------------------------------------------------


@fd.op
def load(address):
    return int(address.rsplit("-", 1)[1].split(".")[0])


@fd.op
def load_from_sql(address):
    return len(address)


@fd.op
def process(data, reference):
    return data * reference % 101


@fd.op
def roll(a, b, c):
    return a + 2 * b + 3 * c


@fd.op
def compare(a, b):
    return abs(a - b)


@fd.op
def reduction(seq):
    return len(seq), sum(seq), max(seq)


#: What ``dask_cluster()`` computes (checked against plain Python in the tests).
DASK_CLUSTER_RESULT = (200, 28226, 438)


def dask_cluster() -> fd.Node:
    """100 loads -> process -> 98 rolls -> 200 random compares -> collect -> reduce."""
    filenames = [f"mydata-{i}.dat" for i in range(100)]
    data = [load(name) for name in filenames]
    reference = load_from_sql("sql://mytable")
    processed = [process(d, reference) for d in data]
    rolled = [roll(*processed[i:i + 3]) for i in range(len(processed) - 2)]
    rng = random.Random(1)
    compared = [compare(rng.choice(rolled), rng.choice(rolled)) for _ in range(200)]
    return reduction(fd.collect(compared))
