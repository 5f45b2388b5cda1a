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
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import Any

__all__ = ["Ref", "scan", "substitute", "template"]


class Ref:
    """A placeholder for the value of the node with key ``key``."""

    __slots__ = ("_key",)

    def __init__(self, key: str):
        object.__setattr__(self, "_key", key)

    @property
    def key(self) -> str:
        """The key of the node whose value this stands for."""
        return self._key

    def __repr__(self) -> str:
        return f"Ref({self._key!r})"

    def __reduce__(self):
        return (Ref, (self._key,))


_CONTAINERS = (list, tuple, dict, set, frozenset)


def _is_dataclass_instance(obj: Any) -> bool:
    return hasattr(type(obj), "__dataclass_fields__") and not isinstance(obj, type)


def scan(obj: Any, found: dict[str, Ref]) -> bool:
    """Add every reference inside ``obj`` to ``found`` (key -> ref); True if any."""
    if isinstance(obj, Ref):
        found.setdefault(obj._key, obj)
        return True
    if isinstance(obj, dict):
        return _scan_all(obj.values(), found)
    if isinstance(obj, _CONTAINERS):
        return _scan_all(obj, found)
    if _is_dataclass_instance(obj):
        return _scan_all(
            (getattr(obj, f.name) for f in dataclasses.fields(obj)), found
        )
    return False


def _scan_all(items, found: dict[str, Ref]) -> bool:
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


def _map_refs(obj: Any, f) -> Any:
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
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = [_map_refs(item, f) for item in obj]
        if all(a is b for a, b in zip(items, obj)):
            return obj
        if hasattr(obj, "_fields"):  # a namedtuple
            return type(obj)._make(items)
        return type(obj)(items)
    if _is_dataclass_instance(obj):
        fields = dataclasses.fields(obj)
        old = [getattr(obj, field.name) for field in fields]
        new_values = [_map_refs(value, f) for value in old]
        if all(a is b for a, b in zip(new_values, old)):
            return obj
        rebuilt = copy.copy(obj)
        for field, value in zip(fields, new_values):
            object.__setattr__(rebuilt, field.name, value)
        return rebuilt
    return obj
