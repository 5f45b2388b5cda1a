"""From nodes to calls: binding values into a node's arguments, and shipping it.

``bind`` fills a node's arguments with the values of its dependencies, for
the local scheduling loop. ``unpicklable`` explains, when a node must travel
to another process and cannot, which of its parts is to blame. (The dask
form of a whole graph is in :mod:`flowdispatch.executors.dask.lower`.)

Examples
--------
>>> import threading
>>> import flowdispatch as fd
>>> inc = fd.op(lambda x: x + 1, name="inc")
>>> a = fd.value(1)
>>> b = inc(a)
>>> bind(b, {a.key: 41})
((41,), {})
>>> print(unpicklable(b, [("argument 0", threading.Lock())], "another process"))
node 'inc-...': argument 0 (a lock) cannot be pickled to send it to another process: cannot pickle '_thread.lock' object. Pass something picklable, create it inside the op, or use a thread-based executor.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..core.node import Node
from ..core.traverse import substitute
from ..errors import SerializationError

__all__ = ["bind", "unpicklable"]

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


def unpicklable(node: Node, parts: Iterable[tuple[str, Any]], where: str,
                error: Exception | None = None) -> SerializationError:
    """The :class:`~flowdispatch.SerializationError` naming the first of ``parts``
    (``(what, object)`` pairs) that cloudpickle cannot pickle, to send it ``where``.

    Its ``__cause__`` is the pickling error.
    """
    import cloudpickle

    for what, part in parts:
        try:
            cloudpickle.dumps(part)
        except Exception as exc:
            found = SerializationError(
                f"node {node._key!r}: {what} (a {type(part).__name__}) cannot be pickled to "
                f"send it to {where}: {exc}. Pass something picklable, create it inside the "
                "op, or use a thread-based executor.")
            found.__cause__ = exc
            return found
    found = SerializationError(f"node {node._key!r} cannot be pickled to send it to {where}: {error}")
    found.__cause__ = error
    return found


def call_parts(node: Node, args: tuple, kwargs: dict) -> list[tuple[str, Any]]:
    """The parts of one call of ``node``, named as an error message would name them."""
    if node._op is None:
        return [("its value", node._args[0])]
    return [*((f"argument {i}", a) for i, a in enumerate(args)),
            *((f"argument {k!r}", v) for k, v in kwargs.items())]
