"""Node keys: ``"{name}-{token}"``, unique per call, or deterministic for pure ops.

A key's prefix is the op name, so that ``dask.utils.key_split(key)`` gives the
name back: the dask dashboard then groups tasks by op, and the scheduler keeps
one task prefix per op (one prefix per task makes it quadratic).

Unique tokens are a random session prefix plus a counter: cheap (no hashing),
unique across processes that share a scheduler, and always ending in a digit
so ``key_split`` never mistakes them for a word of the name.

Examples
--------
>>> from dask.utils import key_split
>>> key = unique_key("load")
>>> key.startswith("load-"), key_split(key)
(True, 'load')
>>> pure_key("add", 1, 2) == pure_key("add", 1, 2)
True
"""

from __future__ import annotations

import itertools
import os
import re
from typing import Any

from dask.base import normalize_token, tokenize

__all__ = ["clean_name", "pure_key", "unique_key"]

_session = os.urandom(5).hex()
_counter = itertools.count()


def _new_session() -> None:
    global _session, _counter
    _session = os.urandom(5).hex()
    _counter = itertools.count()


os.register_at_fork(after_in_child=_new_session)

_UNSAFE = re.compile(r"[^\w.\-\[\]]+")


def clean_name(name: str) -> str:
    """Turn a callable's name into a key prefix.

    Examples
    --------
    >>> clean_name("<lambda>")
    'lambda'
    >>> clean_name("my op")
    'my_op'
    """
    name = _UNSAFE.sub("_", name.strip("<>")).strip("_")
    return name or "op"


def unique_key(name: str) -> str:
    """A fresh key for one call of op ``name``."""
    return f"{name}-{_session}{next(_counter)}"


# dask's Dispatch.register is unannotated
@normalize_token.register(frozenset)  # type: ignore[untyped-decorator,no-untyped-call]
def _normalize_frozenset(s: frozenset[Any]) -> tuple[Any, ...]:
    # dask sorts sets but pickles frozensets, whose order follows the hash seed:
    # a pure key (and a cache key) must not change from one process to the next.
    return ("frozenset", normalize_token(set(s)))


def pure_key(name: str, *parts: object) -> str:
    """The deterministic key of op ``name`` called with ``parts`` (dask's tokenize rules)."""
    return f"{name}-{tokenize(*parts)}"
