"""Lowering: from nodes to calls that run, here or in another process.

``bind`` fills a node's arguments with the values of its dependencies, for
the local scheduling loop. :class:`Call` is the flat, picklable form of one
node (the op and argument templates holding keys, never linked nodes), and
``to_dask`` turns a whole graph into a dask graph of ``Call`` tasks.

Examples
--------
>>> import flowdispatch as fd
>>> inc = fd.op(lambda x: x + 1, name="inc")
>>> a = fd.value(1)
>>> b = inc(a)
>>> bind(b, {a.key: 41})
((41,), {})
>>> Call.of(b)(41)
42
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import GraphError
from .node import Node, _identity
from .traverse import substitute, template

if TYPE_CHECKING:
    from .graph import Graph
    from .op import Op

__all__ = ["Call", "bind", "to_dask"]

_EMPTY: dict = {}


def bind(node: Node, values: dict[str, Any]) -> tuple[tuple, dict]:
    """``(args, kwargs)`` of ``node`` with each dependency replaced by its value."""
    args, kwargs = node._args, node._kwargs or _EMPTY
    if not node._deps:
        return args, kwargs
    if node._deep:
        return substitute(args, values), substitute(kwargs, values)
    args = tuple(values[a._key] if isinstance(a, Node) else a for a in args)
    if kwargs:
        kwargs = {k: values[v._key] if isinstance(v, Node) else v for k, v in kwargs.items()}
    return args, kwargs


class Call:
    """One node, flat and picklable: call it with its dependencies' values, in order."""

    __slots__ = ("op", "args", "kwargs", "deps")

    def __init__(self, op: Op | None, args: tuple, kwargs: dict, deps: tuple[str, ...]):
        self.op = op
        self.args = args
        self.kwargs = kwargs
        self.deps = deps

    @classmethod
    def of(cls, node: Node) -> Call:
        """The call that computes ``node``."""
        return cls(node._op, template(node._args), template(node._kwargs or _EMPTY),
                   tuple(d._key for d in node._deps))

    def __call__(self, *dep_values: Any) -> Any:
        fn = _identity if self.op is None else self.op.__wrapped__
        args, kwargs = self.args, self.kwargs
        if self.deps:
            values = dict(zip(self.deps, dep_values))
            args, kwargs = substitute(args, values), substitute(kwargs, values)
        return fn(*args, **kwargs)

    def __reduce__(self):
        return (Call, (self.op, self.args, self.kwargs, self.deps))

    def __repr__(self) -> str:
        name = "value" if self.op is None else self.op.op_name
        return f"Call({name}, deps={list(self.deps)})"


def to_dask(graph: Graph, values: dict[str, Any] | None = None) -> dict:
    """``{key: dask.task_spec.Task}`` for every node of ``graph``.

    ``values`` supplies the nodes that are not computed (cut inputs, overrides).
    """
    from dask.task_spec import DataNode, Task, TaskRef

    values = values or {}
    missing = [n._key for n in graph.inputs if n._key not in values]
    if missing:
        raise GraphError(
            f"nodes {missing} are inputs of this subgraph: their ancestors were cut "
            "away, so their values must be supplied (overrides={node: value})"
        )
    dsk: dict[str, Any] = {}
    for node in graph:
        key = node._key
        if key in values:
            dsk[key] = DataNode(key, values[key])
        else:
            call = Call.of(node)
            dsk[key] = Task(key, call, *[TaskRef(d) for d in call.deps])
    return dsk
