"""A graph as JSON: ops by import path, literal arguments as JSON data.

Each node is stored with its key, the import path of its function
(``"module:qualname"``), the op options that differ from the defaults and its
arguments, where a node inside an argument becomes ``{"__node__": key}``.
Tuples and sets are tagged so they come back as themselves. Loading imports
the functions again and rebuilds the nodes with the same keys, so
``Graph.from_json(g.to_json(), allow=[...]) == g``.

Loading imports the modules that the JSON names (which runs their import
code), and running the graph calls its functions with arguments from the
JSON. So :func:`loads` checks every name before it imports anything, and
loads only what the caller allows (see :mod:`flowdispatch.core.allowlist`): by
default flowdispatch's own helpers (behind ``node[i]``, the lazy operators
and ``fd.collect``) and builtins that only compute on data. Even so, a graph
from a source you do not trust must not be run: an allowed function may do
whatever its arguments ask.

Examples
--------
>>> import operator, flowdispatch as fd
>>> add = fd.op(operator.add, retries=2)
>>> total = add(add(1, 2), (3, 4)[0])
>>> g = fd.Graph(total)
>>> text = g.to_json()
>>> again = fd.Graph.from_json(text)  # operator.add is allowed by default
>>> again == g, again.targets[0].op.settings.retries
(True, 2)
>>> fd.compute(again.targets[0], executor="sync")
(6,)
>>> planted = text.replace("_operator:add", "os:system")
>>> fd.Graph.from_json(planted)
Traceback (most recent call last):
...
flowdispatch.errors.NotAllowedError: the JSON names functions that were not allowed: 'os:system'...
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import networkx as nx

from ..errors import GraphError, SerializationError
from .allowlist import Allow, load, resolve, split
from .node import Node, make_node
from .op import Op, OpSettings
from .traverse import Ref

if TYPE_CHECKING:
    from .graph import Graph

__all__ = ["FORMAT", "dumps", "loads"]

FORMAT = "flowdispatch.core.graph/1"
_DEFAULTS = OpSettings()


def _path(obj: Any) -> str | None:
    """``"module:qualname"`` if importing that gives back ``obj`` (or an op of it)."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        return None
    try:
        found = resolve(f"{module}:{qualname}")
    except (ImportError, AttributeError):
        return None
    if found is obj or (isinstance(found, Op) and found.__wrapped__ is obj):
        return f"{module}:{qualname}"
    return None


def _encode(obj: Any, where: str) -> Any:
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, Ref):
        return {"__node__": obj._key}
    if type(obj) is list:
        return [_encode(item, where) for item in obj]
    if type(obj) is tuple:
        return {"__tuple__": [_encode(item, where) for item in obj]}
    if type(obj) in (set, frozenset):
        return {"__set__": [_encode(item, where) for item in obj]}
    if type(obj) is dict and all(isinstance(k, str) for k in obj):
        return {"__dict__": {k: _encode(v, where) for k, v in obj.items()}}
    raise SerializationError(
        f"{where} holds a {type(obj).__name__}, which JSON cannot store; to_json keeps "
        "literal arguments as JSON (None, bool, numbers, strings, lists, tuples, sets, "
        "dicts with string keys): pass such data, or load the object inside an op"
    )


def _decode(obj: Any, built: dict[str, Node[Any]]) -> Any:
    if isinstance(obj, list):
        return [_decode(item, built) for item in obj]
    if isinstance(obj, dict):
        if "__node__" in obj:
            return built[obj["__node__"]]
        if "__tuple__" in obj:
            return tuple(_decode(item, built) for item in obj["__tuple__"])
        if "__set__" in obj:
            return {_decode(item, built) for item in obj["__set__"]}
        if not isinstance(obj.get("__dict__"), dict):
            raise GraphError(f"expected a tagged object ('__node__', '__tuple__', '__set__' or "
                             f"'__dict__') in the JSON of Graph.to_json, got {obj!r}")
        return {k: _decode(v, built) for k, v in obj["__dict__"].items()}
    return obj


def _encode_settings(settings: OpSettings, where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if value == getattr(_DEFAULTS, field.name):
            continue
        if field.name == "retry_on":
            types = value if isinstance(value, tuple) else (value,)
            paths = [_path(t) for t in types]
            if None in paths:
                raise SerializationError(
                    f"{where}: retry_on={value!r} cannot be stored by import path; use "
                    "exception classes or a predicate defined at module level"
                )
            out[field.name] = paths
        else:
            out[field.name] = _encode(value, f"{where} option {field.name}")
    return out


def _decode_settings(options: dict[str, Any]) -> OpSettings:
    options = {k: _decode(v, {}) for k, v in options.items()}
    if "retry_on" in options:
        found = tuple(load(p) for p in options["retry_on"])
        options["retry_on"] = found[0] if len(found) == 1 else found
    if "tags" in options:
        options["tags"] = tuple(options["tags"])
    return OpSettings(**options)


def dumps(graph: Graph) -> str:
    """The JSON text of ``graph``."""
    records = []
    for node in graph:
        where = f"node {node._key!r}"
        record: dict[str, Any] = {"key": node._key}
        if node._op is not None:
            fn = node._op.__wrapped__
            path = _path(fn)
            if path is None:
                raise SerializationError(
                    f"{where}: its function {fn!r} cannot be imported by path (a lambda or a "
                    "function defined inside another); to_json stores ops by import path, "
                    "so define it at module level"
                )
            record["fn"] = path
            options = _encode_settings(node._op.settings, where)
            if options:
                record["options"] = options
        if node._nout is not None and node._op is not None and node._nout != node._op.settings.nout:
            record["nout"] = node._nout
        record["args"] = _encode(list(node._args), f"{where} argument")
        if node._kwargs:
            record["kwargs"] = _encode(dict(node._kwargs), f"{where} argument")["__dict__"]
        records.append(record)
    return json.dumps({
        "format": FORMAT,
        "targets": [t._key for t in graph.targets],
        "inputs": [n._key for n in graph.inputs],
        "nodes": records,
    }, indent=1)


def _refs(obj: Any, out: list[str]) -> None:
    if isinstance(obj, list):
        for item in obj:
            _refs(item, out)
    elif isinstance(obj, dict):
        if "__node__" in obj:
            out.append(obj["__node__"])
        else:
            for item in obj.values():
                _refs(item, out)


def _paths(records: Iterable[dict[str, Any]]) -> list[str]:
    """The import paths that the records name: their functions and ``retry_on``."""
    paths = []
    for record in records:
        if "fn" in record:
            paths.append(record["fn"])
        options = record.get("options", {})
        retry_on = options.get("retry_on", []) if isinstance(options, dict) else []
        paths.extend(retry_on if isinstance(retry_on, list) else [retry_on])
    for path in paths:
        split(path)
    return paths


def loads(text: str, allow: Iterable[str] = ()) -> Graph:
    """Rebuild the graph of :func:`dumps` text, importing its functions if ``allow``
    (with :data:`~flowdispatch.core.allowlist.DEFAULT_ALLOW`) allows them all; else raise
    :class:`~flowdispatch.NotAllowedError` before importing anything."""
    from .graph import Graph, check_acyclic

    permitted = Allow(allow)
    data = json.loads(text)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        got = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise GraphError(f"expected JSON written by Graph.to_json ({FORMAT!r}), got {got!r}")
    if not isinstance(data.get("nodes"), list) or not all(
            isinstance(r, dict) and isinstance(r.get("key"), str) for r in data["nodes"]):
        raise GraphError("expected a list of node records with string keys under 'nodes' "
                         "in the JSON of Graph.to_json")
    permitted.check(_paths(data["nodes"]))
    records = {r["key"]: r for r in data["nodes"]}
    g = nx.DiGraph()
    for key, record in records.items():
        g.add_node(key)
        deps: list[str] = []
        _refs([record.get("args", []), record.get("kwargs", {})], deps)
        for dep in deps:
            if dep not in records:
                raise GraphError(f"node {key!r} refers to node {dep!r}, which the JSON lacks")
            g.add_edge(dep, key)
    check_acyclic(g)
    built: dict[str, Node[Any]] = {}
    for key in nx.topological_sort(g):
        record = records[key]
        args = tuple(_decode(record.get("args", []), built))
        kwargs = _decode({"__dict__": record.get("kwargs", {})}, built)
        if "fn" in record:
            fn = load(record["fn"])
            fn = fn.__wrapped__ if isinstance(fn, Op) else fn  # a module-level op: its function
            op = Op(fn, _decode_settings(record.get("options", {})))
            nout = record.get("nout", op.settings.nout)
            built[key] = make_node(key, op, op.__wrapped__, args, kwargs or None, nout)
        else:
            built[key] = make_node(key, None, None, args, None, None)
    targets = tuple(built[k] for k in data["targets"])
    return Graph.cut(targets, frozenset(data.get("inputs", ())))
