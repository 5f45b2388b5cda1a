# pyright: strict
"""A typed user program: what mypy and pyright infer for ops, nodes and results.

``tests/test_typing.py`` checks it with ``mypy --strict`` (with and without the
plugin ``flowdispatch.mypy``) and with pyright in strict mode: every
``assert_type`` must hold and nothing else may be reported. It also runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, assert_type

import flowdispatch as fd
from flowdispatch import Node, Op, Results


@fd.op
def parse(text: str) -> int:
    return int(text)


@fd.op(retries=2, pure=True)
def scale(x: int, factor: float = 2.0) -> float:
    return x * factor


@fd.op(nout=2)
def halves(rows: list[int]) -> tuple[list[int], list[int]]:
    return rows[::2], rows[1::2]


@fd.op(name="fetch", retries=3, retry_on=(ConnectionError,), retry_delay=0.5, backoff=2,
       max_delay=10, timeout=60, cache=False, version="1", resources={"GPU": 1},
       priority=1, workers=None, allow_other_workers=False, tags=("io",))
def fetch(url: str) -> bytes:
    return url.encode()


class Model:
    @fd.op
    def predict(self, x: float) -> str:
        return f"{x:.1f}"


# -- ops: Op[P, R]; a call gives Node[R] -------------------------------------------
as_op: Op[[str], int] = parse
scaled_op: Op[[int, float], float] = scale
plain: Callable[[str], int] = parse.fn
assert_type(parse.fn("3"), int)
retried: Op[[int, float], float] = scale.options(retries=3, name="scale3")
fetch_op: Op[[str], bytes] = fetch
assert_type(fetch("a"), Node[bytes])
retry_on_os: Op[[str], int] = fd.op(retry_on=lambda e: isinstance(e, OSError))(parse.fn)
text = parse("3")
assert_type(text, Node[int])
assert_type(parse.map(["1", "2"]), list[Node[int]])
assert_type(scale.map([1, 2], fd.unmapped(0.5)), list[Node[float]])
words = fd.value(["1", "2"])
assert_type(parse.map(words), Node[list[int]])  # a lazy map: one node, of a list
assert_type(scale.map([1, 2], fd.value([0.5, 1.0])), Node[list[float]])

# -- a node is accepted where the op's parameter expects its value ----------------
big = scale(text, factor=3.0)
assert_type(big, Node[float])
assert_type(scale(text, scale(1)), Node[float])  # Node[float] for a float
assert_type(Model().predict(big), Node[str])  # a method: self is bound

# -- Node is covariant ----------------------------------------------------------------
as_float: Node[float] = text  # a Node[int] is a Node[float]
as_object: Node[object] = big

# -- data nodes, items, attributes, operators -------------------------------------------
rows = fd.value([4, 1, 3, 2])
assert_type(rows, Node[list[int]])
table = fd.value({"a": [1, 2]})
assert_type(table["a"], Node[list[int]])
assert_type(table["a"][0], Node[int])
assert_type(text + 1, Node[Any])
assert_type(-text, Node[Any])
assert_type(text < 2, Node[Any])
assert_type(text.real, Node[Any])
assert_type(fd.value("x").upper(), Node[Any])
even, odd = halves(rows)
assert_type(even, Node[Any])
assert_type(fd.collect([text, parse("4")]), Node[list[int]])

# -- computing ---------------------------------------------------------------------
assert_type(text.compute(executor="sync"), int)
assert_type(fd.compute(text, executor="sync"), tuple[int])
assert_type(fd.compute(text, big, executor="sync"), tuple[int, float])
assert_type(
    fd.compute(text, big, rows, table, scale(2), Model().predict(1.0), executor="sync"),
    tuple[int, float, list[int], dict[str, list[int]], float, str],
)
assert_type(fd.compute(parse.map(["1", "2"]), executor="sync"), tuple[list[int]])
assert_type(fd.compute(text, [big], executor="sync"), tuple[Any, ...])
res = fd.run(big, rows, executor="sync")
assert_type(res, Results)
assert_type(res[big], float)
assert_type(res[rows], list[int])

if __name__ == "__main__":
    assert res[big] == 9.0 and res.ok
    assert fd.compute(text, big, even, executor="sync") == (3, 9.0, [4, 3])
    assert Model().predict(big).compute(executor="sync") == "9.0"
    assert table["a"][0].compute(executor="sync") == 1
    print("ok")
