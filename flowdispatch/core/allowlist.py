"""What a graph loaded from JSON may import: the names, modules and packages a caller allows.

A graph's JSON names its functions by import path, ``"module:qualname"``.
Importing a module runs its code, and running the graph calls the
functions, so :func:`flowdispatch.Graph.from_json` first checks every name
against an :class:`Allow` and imports nothing unless all pass. An entry of
the allow list is one of:

- an exact name, ``"mypackage.ops:fit"``;
- a module, ``"mypackage.ops"``: the functions and classes defined in it;
- a package and everything in it, ``"mypackage."`` (a trailing dot).

:data:`DEFAULT_ALLOW` is always allowed. A name must also be where its object
is defined (``obj.__module__`` and ``obj.__qualname__``), so an allowed module
cannot hand out what it imported: ``"mypackage:os.system"`` is refused.

Examples
--------
>>> allow = Allow(["mypackage.", "tools:clean"])
>>> allow.refused(["mypackage.ops:fit", "tools:clean", "tools:wipe", "os:system"])
['tools:wipe', 'os:system']
>>> load("_operator:add")
<built-in function add>
>>> load("flowdispatch.core.jsongraph:json.loads")
Traceback (most recent call last):
...
flowdispatch.errors.GraphError: 'flowdispatch.core.jsongraph:json.loads' is not where ... ('json:loads'); ...
"""

from __future__ import annotations

import builtins
import importlib
import operator
from collections.abc import Iterable
from typing import Any

from ..errors import GraphError, NotAllowedError
from .node import _collect

__all__ = ["DEFAULT_ALLOW", "Allow", "load", "resolve", "split"]


def _names(*objs: Any) -> frozenset[str]:
    return frozenset(f"{obj.__module__}:{obj.__qualname__}" for obj in objs)


#: Allowed without being asked for: flowdispatch's helpers behind ``node[i]``,
#: the lazy operators and ``fd.collect``; builtins that only compute on data;
#: and the builtin exception classes (for ``retry_on``). Not ``getattr``, nor
#: the helpers behind ``node.attr`` and ``node.method()``: with them a graph
#: can reach any object.
DEFAULT_ALLOW: frozenset[str] = _names(
    _collect, operator.getitem, *(getattr(operator, name) for name in (
        "add", "sub", "mul", "matmul", "truediv", "floordiv", "mod", "pow", "lshift",
        "rshift", "and_", "xor", "or_", "lt", "le", "gt", "ge", "neg", "pos", "abs", "invert")),
    abs, all, any, len, max, min, round, sorted, sum,
    bool, complex, dict, float, frozenset, int, list, set, str, tuple,
    *(obj for obj in vars(builtins).values()
      if isinstance(obj, type) and issubclass(obj, BaseException)),
)

_FORMS = ("expected an exact name ('module:function'), a module ('module') or a package "
          "and everything in it ('package.')")


def _dotted(name: str) -> bool:
    return all(part.isidentifier() for part in name.split("."))


def split(path: Any) -> tuple[str, str]:
    """``(module, qualname)`` of an import path; ``GraphError`` if it is not one."""
    module, colon, qualname = path.partition(":") if isinstance(path, str) else ("", "", "")
    if not (colon and _dotted(module) and _dotted(qualname)):
        raise GraphError(f"expected an import path 'module:qualname' in the JSON, got {path!r}")
    return module, qualname


class Allow:
    """The names, modules and packages a caller allows, with :data:`DEFAULT_ALLOW`."""

    __slots__ = ("exact", "modules", "packages")

    def __init__(self, allow: Iterable[str] = ()):
        if isinstance(allow, (str, bytes)) or not isinstance(allow, Iterable):
            raise TypeError(f"allow: expected a list of names, such as ['mypackage.'], got "
                            f"{type(allow).__name__} {allow!r}")
        exact, modules, packages = set(DEFAULT_ALLOW), set(), set()  # type: set[str], set[str], set[str]
        for entry in allow:
            if not isinstance(entry, str):
                raise TypeError(f"allow: {_FORMS}, got {type(entry).__name__} {entry!r}")
            module, colon, qualname = entry.partition(":")
            if colon and _dotted(module) and _dotted(qualname):
                exact.add(entry)
            elif entry.endswith(".") and _dotted(entry[:-1]):
                packages.add(entry[:-1])
            elif _dotted(entry):
                modules.add(entry)
            else:
                raise ValueError(f"allow: {_FORMS}, got {entry!r}")
        self.exact: frozenset[str] = frozenset(exact)
        self.modules: frozenset[str] = frozenset(modules)
        self.packages: set[str] = packages

    def __contains__(self, path: str) -> bool:
        module = path.partition(":")[0]
        return (path in self.exact or module in self.modules
                or any(module == p or module.startswith(p + ".") for p in self.packages))

    def refused(self, paths: Iterable[str]) -> list[str]:
        """The paths not allowed, in order, each once."""
        return list(dict.fromkeys(path for path in paths if path not in self))

    def check(self, paths: Iterable[str]) -> None:
        """Raise :class:`~flowdispatch.NotAllowedError` naming the paths not allowed."""
        refused = self.refused(paths)
        if refused:
            raise NotAllowedError(refused)


def resolve(path: str) -> Any:
    """Import ``"module:qualname"`` and return the object; no questions asked."""
    module, _, qualname = path.partition(":")
    found: Any = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    return found


def load(path: str) -> Any:
    """:func:`resolve` ``path``, and check that it names the object where it is defined."""
    found = resolve(path)  # an op answers for its function
    where = f"{getattr(found, '__module__', None)}:{getattr(found, '__qualname__', None)}"
    if where != path:
        raise GraphError(f"{path!r} is not where its object is defined ({where!r}); the JSON "
                         "of Graph.to_json names functions where they are defined")
    return found
