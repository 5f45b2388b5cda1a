"""From nodes to calls: binding values into a node's arguments, and shipping it.

``bind`` fills a node's arguments with the values of its dependencies, for
the local scheduling loop. ``unpicklable`` explains, when a node must travel
to another process and cannot, which of its parts is to blame; ``by_reference``
lets an op's function travel as its module and name, so that the other
process runs (and its tracebacks show) the function of the module's source. (The dask
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

import sys
from collections.abc import Callable, Iterable
from typing import Any

from ..core.node import Node
from ..core.traverse import substitute
from ..errors import SerializationError

__all__ = ["bind", "by_reference", "note_traceback", "unpicklable"]

_EMPTY: dict[str, Any] = {}


def _op_function(module: str, qualname: str) -> Callable[..., Any]:
    """The function of the op importable as ``module.qualname`` (unpickling a reference)."""
    import importlib

    found: Any = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    fn: Callable[..., Any] = getattr(found, "__wrapped__", found)
    return fn


class _Reference:
    """Pickles as :func:`_op_function` of a module and a name: unpickled, the function."""

    __slots__ = ("module", "qualname")

    def __init__(self, module: str, qualname: str):
        self.module, self.qualname = module, qualname

    def __reduce__(self) -> tuple[Callable[[str, str], Callable[..., Any]], tuple[str, str]]:
        return (_op_function, (self.module, self.qualname))


def note_traceback(error: BaseException, where: str) -> None:
    """Before ``error`` leaves this process: add its traceback, formatted here (with the
    source lines, which the other process may not have), as a note, and drop the
    traceback objects of it and its causes, so that the traceback is printed once.

    Examples
    --------
    >>> try:
    ...     1 / 0
    ... except ZeroDivisionError as exc:
    ...     note_traceback(exc, "the worker")
    ...     error = exc
    >>> print(error.__notes__[0])
    Traceback in the worker:
    Traceback (most recent call last):
      File "<doctest ...>", line 2, in <module>
        1 / 0
        ~~^~~
    ZeroDivisionError: division by zero
    >>> error.__traceback__ is None
    True
    """
    import traceback

    notes = {f"{note}\n" for note in getattr(error, "__notes__", ())}
    lines = [line for line in traceback.format_exception(error) if line not in notes]
    error.add_note(f"Traceback in {where}:\n" + "".join(lines).rstrip())
    seen: set[int] = set()
    stack: list[BaseException | None] = [error]
    while stack:
        exc = stack.pop()
        if exc is not None and id(exc) not in seen:
            seen.add(id(exc))
            exc.__traceback__ = None
            stack += [exc.__cause__, exc.__context__]


def by_reference(fn: Callable[..., Any]) -> Any:
    """``fn``, or what pickles as a reference to it when it is the function of an op that
    its module names (``@op def f``: the module's ``f`` is the op, so cloudpickle would
    pickle the function by value, and tracebacks would show no source lines).

    Examples
    --------
    >>> by_reference(len) is len  # pickled by reference anyway
    True
    """
    module_name = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", "")
    module = sys.modules.get(module_name) if module_name else None
    if module is None or module_name == "__main__" or "<locals>" in qualname:
        return fn
    found: Any = module
    for part in qualname.split("."):
        found = getattr(found, part, None)
    if found is not fn and getattr(found, "__wrapped__", None) is fn:
        return _Reference(module_name, qualname)  # type: ignore[arg-type]  # module found: named
    return fn


def bind(node: Node[Any], values: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
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


def unpicklable(node: Node[Any], parts: Iterable[tuple[str, Any]], where: str,
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


def call_parts(node: Node[Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[tuple[str, Any]]:
    """The parts of one call of ``node``, named as an error message would name them."""
    if node._op is None:
        return [("its value", node._args[0])]
    return [*((f"argument {i}", a) for i, a in enumerate(args)),
            *((f"argument {k!r}", v) for k, v in kwargs.items())]
