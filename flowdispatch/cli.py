"""The ``flowdispatch`` command: run a workflow, draw it, or run the demo.

::

    flowdispatch run MODULE:ATTR [--executor NAME|ADDRESS] [--progress] [--json]
    flowdispatch show MODULE:ATTR [-o graph.svg] [--rankdir LR]
    flowdispatch demo [--executor NAME|ADDRESS] [-o demo.svg] [--no-svg]

``MODULE:ATTR`` names what to run: ``MODULE`` is an importable module (the
current folder is searched first) or a path to a ``.py`` file, and ``ATTR``
(dotted for nested names) is a node, a list, tuple or dict of nodes, or a
function without required arguments that returns one of those.

Exit codes: 0 when everything ran; 1 when a node failed (its error and key go
to stderr), the user's code raised while loading, or the executor could not
start; 2 for a usage error (the message says what was expected and what to do).

Examples
--------
>>> target = load_target("flowdispatch.demo:build")
>>> target.name
'report'
>>> load_target("flowdispatch.demo:PRICES")
Traceback (most recent call last):
...
flowdispatch.cli.UsageError: flowdispatch.demo:PRICES is dict {...}; expected a node, a list/tuple/dict of nodes, or a function without required arguments that returns one of those. Build nodes by calling @fd.op functions.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import pprint
import reprlib
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import flowdispatch as fd

from .core.graph import as_nodes
from .core.node import Node
from .core.results import STATES
from .core.traverse import substitute
from .errors import FlowDispatchError, UnknownExecutorError

__all__ = ["UsageError", "load_target", "main", "summary"]


class UsageError(Exception):
    """A mistake on the command line (exit code 2); the message says how to fix it."""


class _UserCodeError(Exception):
    """The user's own code raised while loading the target (exit code 1)."""

    def __init__(self, what: str, error: BaseException):
        super().__init__(what)
        self.what = what
        self.error = error


# -- finding the target ----------------------------------------------------------------
def _split(spec: str) -> tuple[str, str]:
    module, sep, attr = spec.rpartition(":")
    if not sep or not module or not attr:
        raise UsageError(
            f"expected MODULE:ATTR, such as 'mypkg.flows:report' or 'flows.py:report', "
            f"got {spec!r}"
        )
    return module, attr


def _import(module: str) -> ModuleType:
    if module.endswith(".py") or "/" in module or os.sep in module:
        path = Path(module)
        if not path.is_file():
            raise UsageError(f"no such file {module!r}; expected a path to a .py file")
        folder, module = str(path.resolve().parent), path.stem
        if folder not in sys.path:
            sys.path.insert(0, folder)
    elif "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` does: modules in this folder
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
            raise UsageError(
                f"cannot import module {module!r} ({exc}); expected an importable module "
                "such as 'mypkg.flows', or a path to a .py file: run from the folder that "
                "contains it, or install its package"
            ) from None
        raise _UserCodeError(f"importing module {module!r} failed", exc) from exc
    except Exception as exc:
        raise _UserCodeError(f"importing module {module!r} failed", exc) from exc


def _candidates(module: ModuleType) -> list[str]:
    """Names in ``module`` that could be targets: nodes (or containers of them), and
    functions defined there."""
    names = []
    for name, obj in vars(module).items():
        if name.startswith("_") or isinstance(obj, (type, ModuleType)):
            continue
        if isinstance(obj, Node) or (isinstance(obj, (list, tuple, dict)) and _has_nodes(obj)) or (
            callable(obj) and getattr(obj, "__module__", None) == module.__name__
        ):
            names.append(name)
    return sorted(names)


def _has_nodes(obj: Any) -> bool:
    try:
        as_nodes([obj])
    except TypeError:
        return False
    return True


def _describe(obj: Any) -> str:
    return f"{type(obj).__name__} {reprlib.repr(obj)}"


def load_target(spec: str) -> Any:
    """Import ``MODULE:ATTR`` and return the nodes it names (see the module docstring).

    Raises :class:`UsageError` when the module, the attribute or the nodes are missing.
    """
    module_name, attr = _split(spec)
    module = _import(module_name)
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            known = _candidates(module)
            hint = f"; it has {known}" if known else ""
            raise UsageError(
                f"module {module.__name__!r} has no attribute {attr!r}{hint}; expected the "
                "name of a node, a list/dict of nodes, or a function that returns them"
            ) from None
    if callable(obj) and not isinstance(obj, Node):
        try:
            inspect.signature(obj).bind()
        except TypeError:
            raise UsageError(
                f"{spec} is a function that needs arguments; expected one callable without "
                "arguments. Give its parameters defaults, or name a node instead"
            ) from None
        except ValueError:  # no readable signature: just call it
            pass
        try:
            obj = obj()
        except Exception as exc:
            raise _UserCodeError(f"calling {spec}() failed", exc) from exc
        spec = f"{spec}()"
        what = "returned"
    else:
        what = "is"
    if not _has_nodes(obj):
        raise UsageError(
            f"{spec} {what} {_describe(obj)}; expected a node, a list/tuple/dict of nodes, "
            "or a function without required arguments that returns one of those. "
            "Build nodes by calling @fd.op functions."
        )
    return obj


# -- reporting ----------------------------------------------------------------------------
def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return repr(value)
    return value


def _error_text(error: BaseException | None) -> str | None:
    return None if error is None else f"{type(error).__name__}: {error}"


def summary(results: fd.Results) -> dict[str, Any]:
    """A JSON-ready summary of a run: ``ok``, state counts and one record per node.

    Nodes come in topological order. Each record has ``key``, ``name``,
    ``state``, ``duration`` (seconds, or ``None`` if it never ran),
    ``attempts``, ``reloads`` (how often a dask worker read its value, lost with
    another worker, back from the cache), ``error`` (``"Type: message"`` or
    ``None``) and, for an
    ``upstream_failed`` node (whose error is an ``UpstreamError``), ``upstream``:
    the key of the ancestor that failed.

    Examples
    --------
    >>> import flowdispatch as fd
    >>> @fd.op
    ... def fail():
    ...     raise ValueError("no")
    >>> s = summary(fd.run(fd.op(len)(fail()), executor="sync"))
    >>> s["ok"], s["counts"], [n["state"] for n in s["nodes"]]
    (False, {'failed': 1, 'upstream_failed': 1}, ['failed', 'upstream_failed'])
    >>> s["nodes"][0]["error"]
    'ValueError: no'
    """
    nodes = []
    for node in results.graph:
        state = results.state(node)
        error = results.error(node)
        record = {
            "key": node.key,
            "name": node.name,
            "state": state,
            "duration": results.duration(node),
            "attempts": results.attempts(node),
            "reloads": results.reloads(node),
            "error": _error_text(error),
        }
        if state == "upstream_failed":
            record["upstream"] = getattr(error, "upstream", None)
        nodes.append(record)
    counts = {state: results.counts[state] for state in STATES if state in results.counts}
    return {
        "ok": results.ok,
        "counts": counts,
        "targets": [t.key for t in results.targets],
        "nodes": nodes,
    }


def _print_failures(results: fd.Results) -> None:
    err = sys.stderr
    for node in results.failed:
        error = results.error(node)
        print(f"error: node {node.key!r} failed:", file=err)
        print("".join(traceback.format_exception(error)).rstrip(), file=err)
    counts = results.counts
    parts = [f"{counts.get('failed', 0)} failed"]
    if counts.get("upstream_failed"):
        parts.append(f"{counts['upstream_failed']} did not run because an upstream node failed")
    if counts.get("cancelled"):
        parts.append(f"{counts['cancelled']} cancelled")
    print(f"flowdispatch: {len(results)} nodes: " + ", ".join(parts), file=err)


def _print_value(value: Any) -> None:
    print(value if isinstance(value, str) else pprint.pformat(value, sort_dicts=False))


# -- the commands ------------------------------------------------------------------------
def _cmd_run(args: argparse.Namespace) -> int:
    target = load_target(args.target)
    started = time.perf_counter()
    results = fd.run(target, executor=args.executor, progress=args.progress)
    elapsed = time.perf_counter() - started
    value = None
    if results.ok:
        nodes = as_nodes([target])
        value = substitute(target, {n.key: results[n] for n in nodes})
    if args.json:
        out = {"executor": args.executor or fd.config.get("executor"),
               "seconds": round(elapsed, 6), **summary(results)}
        if results.ok:
            out["value"] = _jsonable(value)
        print(json.dumps(out, indent=2, default=repr))
    elif results.ok:
        _print_value(value)
    if not results.ok:
        _print_failures(results)
        return 1
    return 0


def _check_output(path: str) -> None:
    from .view.render import FORMATS

    suffix = Path(path).suffix.lstrip(".").lower()
    if suffix not in FORMATS:
        raise UsageError(
            f"-o {path!r}: expected a file name ending in one of "
            f"{', '.join('.' + f for f in FORMATS)} (such as graph.svg)"
        )


def _cmd_show(args: argparse.Namespace) -> int:
    if args.output:
        _check_output(args.output)
    graph = fd.Graph(load_target(args.target))
    options: dict[str, Any] = {"rankdir": args.rankdir}
    if args.collapse is not None:
        options["collapse"] = args.collapse
    if args.output:
        graph.visualize(filename=args.output, **options)
        print(f"wrote {args.output} ({len(graph)} nodes)")
    else:
        print(graph.to_dot(**options))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    if not args.no_svg:
        _check_output(args.output)
    from . import demo

    demo.main(executor=args.executor, out=None if args.no_svg else args.output)
    return 0


def _cmd_cache(args: argparse.Namespace) -> int:
    from . import cache

    folder = cache.cache_dir()
    if args.clear:
        count, size = cache.clear()
        print(f"removed {count} entries ({size / 1e6:.1f} MB) from {folder}")
    else:
        found = cache.sizes()
        size = sum(found.values())
        print(f"{folder}: {len(found)} entries ({size / 1e6:.1f} MB)")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flowdispatch",
        description="Run flowdispatch workflows, draw their graphs, run the demo, or look after the cache.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {fd.__version__}")
    commands = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    commands.required = True
    executor_help = ("'sync', 'threads', 'processes', 'dask' (a local cluster), another "
                     "registered name, or a scheduler address such as tcp://127.0.0.1:8786 "
                     "(default: the configured default, 'threads' unless changed)")

    run = commands.add_parser(
        "run", help="compute a node (or nodes) and print the value",
        description="Import MODULE, take ATTR (a node, a list/dict of nodes, or a function "
                    "without arguments returning those), compute it and print the value. "
                    "Exits 1 if a node failed.")
    run.add_argument("target", metavar="MODULE:ATTR")
    run.add_argument("--executor", "-e", metavar="NAME|ADDRESS", help=executor_help)
    run.add_argument("--progress", action="store_true", help="show a progress bar (on stderr)")
    run.add_argument("--json", action="store_true",
                     help="print a JSON summary: per-node states, durations, attempts, errors")
    run.set_defaults(handler=_cmd_run)

    show = commands.add_parser(
        "show", help="draw the graph with Graphviz",
        description="Import MODULE, take ATTR and draw its graph; without -o, print DOT text.")
    show.add_argument("target", metavar="MODULE:ATTR")
    show.add_argument("-o", "--output", metavar="FILE",
                      help="write the drawing here; the format comes from the extension (.svg, .png, .pdf, ...)")
    show.add_argument("--rankdir", default="TB", choices=("TB", "LR", "BT", "RL"),
                      help="direction of the graph (default: TB, top to bottom)")
    show.add_argument("--collapse", type=int, metavar="N",
                      help="draw more than N calls of one op as a single node")
    show.set_defaults(handler=_cmd_show)

    demo = commands.add_parser(
        "demo", help="run the demo workflow (a small ETL pipeline) and draw it",
        description="Run the README's demo workflow, print its result, and write its graph "
                    "as SVG (plus <name>-run.svg, coloured by state after the run).")
    demo.add_argument("--executor", "-e", metavar="NAME|ADDRESS", help=executor_help)
    demo.add_argument("-o", "--output", default="demo.svg", metavar="FILE",
                      help="where to write the graph (default: demo.svg)")
    demo.add_argument("--no-svg", action="store_true", help="print the result only")
    demo.set_defaults(handler=_cmd_demo)

    cached = commands.add_parser(
        "cache", help="show the on-disk cache of ops with cache=True, or clear it",
        description="Print the cache directory or store URL (the cache_dir setting, e.g. "
                    "DASK_FLOWDISPATCH__CACHE_DIR, else ~/.cache/flowdispatch), how many "
                    "values it holds and their size.")
    cached.add_argument("--clear", action="store_true",
                        help="remove every cached value (other files in the folder stay)")
    cached.set_defaults(handler=_cmd_cache)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    where = f"flowdispatch {args.command}"
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except (UsageError, UnknownExecutorError) as exc:
        print(f"{where}: error: {exc}", file=sys.stderr)
        return 2
    except _UserCodeError as exc:
        print(f"{where}: error: {exc.what}:", file=sys.stderr)
        print("".join(traceback.format_exception(exc.error)).rstrip(), file=sys.stderr)
        return 1
    except FlowDispatchError as exc:  # ours, e.g. no scheduler at that address: the message says it
        print(f"{where}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{where}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # an op failed (demo), or the executor or renderer could not work
        if type(exc).__name__ == "ExecutableNotFound":
            print(f"{where}: error: {exc}. Install Graphviz (Debian: apt-get install "
                  "graphviz, or make dot), or leave out -o to print DOT text.", file=sys.stderr)
        else:
            print("".join(traceback.format_exception(exc)).rstrip(), file=sys.stderr)
            print(f"{where}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
