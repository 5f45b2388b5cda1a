"""Argument traversal: finding references inside nested arguments and replacing them.

A *reference* (:class:`Ref`, the base of every Node) stands for a value that
another node computes. References may hide anywhere in an op's arguments: in
lists, tuples, dicts (values), sets, dataclasses and namedtuples. This module
finds them when a node is built and swaps in their values when it runs.

Examples
--------
>>> a, b = Ref("a-1"), Ref("b-2")
>>> found = {}
>>> scan([1, {"x": a}, (b, 3)], found)
True
>>> sorted(found)
['a-1', 'b-2']
>>> substitute([1, {"x": a}, (b, 3)], {"a-1": 10, "b-2": 20})
[1, {'x': 10}, (20, 3)]
>>> materialize([(x for x in (a, 2))])
[[Ref('a-1'), 2]]
"""

from __future__ import annotations

import copy
import dataclasses
import io
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

__all__ = ["HasIterator", "Ref", "materialize", "nesting_error", "scan", "substitute",
           "template"]


class Ref:
    """A placeholder for the value of the node with key ``key``."""

    __slots__ = ("_key",)
    _key: str

    def __init__(self, key: str):
        object.__setattr__(self, "_key", key)

    @property
    def key(self) -> str:
        """The key of the node whose value this stands for."""
        return self._key

    def __repr__(self) -> str:
        return f"Ref({self._key!r})"

    def __reduce__(self) -> tuple[Callable[..., Ref], tuple[Any, ...]]:
        return (Ref, (self._key,))


_CONTAINERS = (list, tuple, dict, set, frozenset)


_UNSET = object()


class HasIterator(Exception):
    """Raised by :func:`scan` when ``obj`` holds an iterator: :func:`materialize` it first."""


def _is_dataclass_instance(obj: Any) -> bool:
    return hasattr(type(obj), "__dataclass_fields__") and not isinstance(obj, type)


def _is_iterator(obj: Any) -> bool:
    """An iterator or generator to turn into a list (an open file is passed as it is)."""
    return isinstance(obj, Iterator) and not isinstance(obj, io.IOBase)


def _fields(obj: Any) -> list[tuple[str, Any]]:
    """A dataclass's ``(name, value)`` pairs, leaving out fields that are not set
    (``field(init=False)`` without a default)."""
    pairs = ((f.name, getattr(obj, f.name, _UNSET)) for f in dataclasses.fields(obj))
    return [(name, value) for name, value in pairs if value is not _UNSET]


def scan(obj: Any, found: dict[str, Ref]) -> bool:
    """Add every reference inside ``obj`` to ``found`` (key -> ref); True if any.

    Raises :class:`HasIterator` if ``obj`` holds an iterator (see :func:`materialize`).
    """
    if isinstance(obj, Ref):
        found.setdefault(obj._key, obj)
        return True
    if isinstance(obj, dict):
        return _scan_all(obj.values(), found)
    if isinstance(obj, _CONTAINERS):
        return _scan_all(obj, found)
    if isinstance(obj, slice):
        return _scan_all((obj.start, obj.stop, obj.step), found)
    if _is_dataclass_instance(obj):
        return _scan_all((value for _, value in _fields(obj)), found)
    if _is_iterator(obj):
        raise HasIterator
    return False


def _scan_all(items: Iterable[Any], found: dict[str, Ref]) -> bool:
    hit = False
    for item in items:
        if isinstance(item, Ref):
            found.setdefault(item._key, item)
            hit = True
        elif type(item) in _ATOMS:
            continue
        elif scan(item, found):
            hit = True
    return hit


def substitute(obj: Any, values: Mapping[str, Any]) -> Any:
    """``obj`` with every reference replaced by ``values[ref.key]``.

    Containers without references come back as they are (not copied).
    """
    return _map_refs(obj, lambda ref: values[ref._key])


def template(obj: Any) -> Any:
    """``obj`` with every node replaced by a bare :class:`Ref` to its key.

    This is the flat, picklable form shipped to other processes: a node
    carries its whole ancestry, a ``Ref`` only a key.
    """
    return _map_refs(obj, lambda ref: ref if type(ref) is Ref else Ref(ref._key))


_ATOMS = (int, float, str, bytes, bool, type(None))


def _map_refs(obj: Any, f: Callable[[Ref], Any]) -> Any:
    """Apply ``f`` to every reference in ``obj``; rebuild only what changed."""
    if isinstance(obj, Ref):
        return f(obj)
    if type(obj) in _ATOMS:
        return obj
    if isinstance(obj, dict):
        new = {k: _map_refs(v, f) for k, v in obj.items()}
        if all(new[k] is v for k, v in obj.items()):
            return obj
        if type(obj) is dict:
            return new
        rebuilt = copy.copy(obj)
        rebuilt.update(new)
        return rebuilt
    if isinstance(obj, slice):
        bounds = [_map_refs(item, f) for item in (obj.start, obj.stop, obj.step)]
        return slice(*bounds) if any(a is not b for a, b in
                                     zip(bounds, (obj.start, obj.stop, obj.step))) else obj
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = [_map_refs(item, f) for item in obj]
        if all(a is b for a, b in zip(items, obj)):
            return obj
        if hasattr(obj, "_fields"):  # a namedtuple
            return type(obj)._make(items)  # type: ignore[union-attr]  # hasattr cannot narrow a type
        return type(obj)(items)
    if _is_dataclass_instance(obj):
        old = _fields(obj)
        new_values = [_map_refs(value, f) for _, value in old]
        if all(a is b for a, (_, b) in zip(new_values, old)):
            return obj
        rebuilt = copy.copy(obj)
        for (name, _), value in zip(old, new_values):
            object.__setattr__(rebuilt, name, value)
        return rebuilt
    if f is _listed:
        return _map_refs(list(obj), f) if _is_iterator(obj) else obj
    return obj


def _listed(ref: Ref) -> Ref:
    return ref


def materialize(obj: Any) -> Any:
    """``obj`` with every iterator or generator inside it replaced by a list of its items.

    What is left holds no iterators, so :func:`scan` can look into it. Containers
    without iterators come back as they are.

    Examples
    --------
    >>> materialize((iter([1, 2]), {"k": map(str, [3])}))
    ([1, 2], {'k': ['3']})
    """
    if _is_iterator(obj):
        obj = list(obj)
    return _map_refs(obj, _listed)


def nesting_error(arg: Any, where: str) -> ValueError:
    """The error for an argument too deep to traverse: one that contains itself, or
    one nested deeper than Python's recursion limit allows."""
    path: set[int] = set()
    stack: list[tuple[Any, bool]] = [(arg, False)]
    while stack:  # depth-first, iteratively: is some container inside itself?
        obj, leaving = stack.pop()
        if leaving:
            path.discard(id(obj))
            continue
        if id(obj) in path:
            return ValueError(
                f"{where} contains itself (a {type(obj).__name__} inside itself), so its "
                "nodes cannot be found: pass a structure without cycles, or wrap it in "
                "fd.value(..., traverse=False) to pass it as opaque data")
        if isinstance(obj, (*_CONTAINERS, dict)):
            path.add(id(obj))
            stack.append((obj, True))
            stack.extend((item, False) for item in (obj.values() if isinstance(obj, dict) else obj))
    return ValueError(
        f"{where} is nested too deeply to look for nodes inside it (deeper than Python's "
        "recursion limit): flatten it, or wrap it in fd.value(..., traverse=False) to pass "
        "it as opaque data")
