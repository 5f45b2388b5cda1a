"""Rendering: a graph, or what a run did to it, as a graphviz drawing.

Every node becomes one DOT node whose id is its key: ops are boxes labelled
with the op name, data nodes (:func:`~flowdispatch.value`) ellipses labelled
with their name and a short repr. Edges follow data, from dependency to
dependent. Literal arguments are not drawn; a node's tooltip shows the call.
After a run (a :class:`~flowdispatch.Results`), nodes are coloured by state,
with durations and attempts in the label, the first words of an error under
a failed node's name, the whole error in the tooltip, and a legend.
Jupyter gets each drawing twice: as SVG (with tooltips) and as PNG, which
untrusted notebooks, GitHub and nbviewer show too (they show no SVG).
While a run goes on (:mod:`flowdispatch.live`), two more states are drawn:
``running`` and ``pending`` (not started yet).

Large graphs collapse. One topological pass gives each node its depth (the
longest path from a source) and its group: same title (op name, or ``[0]``,
``.attr``, ...), same depth, same groups of dependencies. A group of many nodes
is drawn as one node, ``inc ×100``, with its count per state after a run and
the colour of its worst state; edges between groups are drawn once.

Examples
--------
>>> import flowdispatch as fd
>>> from flowdispatch.view.render import visualize
>>> inc = fd.op(lambda x: x + 1, name="inc")
>>> one = fd.value(1, name="one")
>>> two = inc(one)
>>> three = inc(two)
>>> dot = visualize(three)
>>> dot.source.count("shape=box"), dot.source.count("shape=ellipse")
(2, 1)
>>> f'"{one.key}" -> "{two.key}"' in dot.source
True
>>> dot.source.count("penwidth=2.5")  # the target
1
"""

from __future__ import annotations

import base64
import html
import inspect
import json
import operator
import os
import reprlib
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterable
from typing import Any, NamedTuple

import graphviz

from ..core.graph import Graph
from ..core.node import Node, _call_method, _collect
from ..core.results import STATES, Results
from ..errors import DotNotFoundError, UpstreamError

__all__ = ["FORMATS", "LIVE_STATES", "STATE_COLORS", "DotNotFoundError", "results_bundle",
           "results_html", "visualize"]

FORMATS = ("dot", "gv", "pdf", "png", "svg")
"""The formats :func:`visualize` writes (``dot`` and ``gv`` are DOT source)."""

# Paul Tol's "light" scheme: readable under black text, and told apart with
# every common colour-vision deficiency. Each state: (fill, border).
STATE_COLORS: dict[str, tuple[str, str]] = {
    "done": ("#A9DFC9", "#2E8B6A"),
    "failed": ("#EE8866", "#BB3311"),
    "upstream_failed": ("#EEDD88", "#AA8800"),
    "cached": ("#77AADD", "#336699"),
    "cancelled": ("#DDDDDD", "#777777"),
    "skipped": ("#99DDFF", "#4488AA"),
    "running": ("#BBCC33", "#6B7A00"),
    "pending": ("#FFFFFF", "#999999"),
}
"""``{state: (fill, border)}``: the colours of each state, and of ``LIVE_STATES``."""

LIVE_STATES = ("running", "pending")
"""The states of a node while a run goes on, besides those of ``Results.STATES``."""

_ALL_STATES = (*STATES, *LIVE_STATES)
_WORSE_FIRST = ("failed", "upstream_failed", "running", "pending", "cancelled", "skipped",
                "cached", "done")
_STYLES = {"upstream_failed": "dashed", "cancelled": "dotted", "skipped": "dashed"}
_RANKDIRS = ("TB", "LR", "BT", "RL")
_COLLAPSE_AT = 100
_FONT = "Helvetica"
_DETAIL = '<BR/><FONT POINT-SIZE="9" COLOR="#555555">{}</FONT>'
_NOTE = '<BR/><FONT POINT-SIZE="9" COLOR="#7A1A00">{}</FONT>'
_NOTE_CHARS = 18  # an error under a node is cut to this, or to the node's name if longer
_PNG_DPI = "96"  # the size at which browsers show the SVG


class _Digraph(graphviz.Digraph):  # type: ignore[misc]  # graphviz ships no types
    """A ``graphviz.Digraph`` whose rendering says how to install a missing ``dot``."""

    def pipe(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().pipe(*args, **kwargs)
        except graphviz.ExecutableNotFound as exc:
            raise DotNotFoundError() from exc

    def render(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().render(*args, **kwargs)
        except graphviz.ExecutableNotFound as exc:
            raise DotNotFoundError() from exc

    def png(self) -> bytes:
        """The drawing as a PNG of 96 dpi, with a palette when Graphviz has gd (a third the size)."""
        copy = self.copy()
        copy.attr(dpi=_PNG_DPI)
        png: bytes
        try:
            png = copy.pipe(format="png", renderer="cairo", formatter="gd")
        except graphviz.CalledProcessError:  # a Graphviz built without gd
            png = copy.pipe(format="png")
        return png

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None,
                          **_: Any) -> dict[str, str]:
        """SVG for trusted notebooks, and a PNG that untrusted ones, GitHub and nbviewer show."""
        wanted = {"image/svg+xml", "image/png"} if include is None else set(include)
        wanted -= set(exclude or ())
        bundle = {}
        if "image/svg+xml" in wanted:
            bundle["image/svg+xml"] = self.pipe(format="svg", encoding="utf-8")
        if "image/png" in wanted:
            bundle["image/png"] = base64.b64encode(self.png()).decode("ascii")
        return bundle


def visualize(*items: Any, filename: str | os.PathLike[str] | None = None,
              format: str | None = None, rankdir: str = "TB", color: str | bool | None = None,
              collapse: int | bool | None = None) -> graphviz.Digraph:
    """Draw nodes, a graph, or the results of a run with graphviz.

    Parameters
    ----------
    *items
        Nodes (or containers of nodes), one :class:`~flowdispatch.Graph`, or one
        :class:`~flowdispatch.Results`.
    filename
        Write the drawing there; the format comes from the extension (see ``FORMATS``).
    format
        One of ``FORMATS``; overrides the extension. Without a filename, it
        becomes the drawing's ``format`` (for ``.render()`` and ``.pipe()``).
    rankdir
        ``"TB"`` (top to bottom), ``"LR"``, ``"BT"`` or ``"RL"``.
    color
        ``"state"``: colour by what happened in the run (the default for
        Results); ``False``: no colours.
    collapse
        Collapse calls of one op when the graph has more than this many nodes
        (default 100); ``True`` always, ``False`` never.

    Returns
    -------
    graphviz.Digraph
        Shown inline in Jupyter; ``.source`` is the DOT text.

    Raises
    ------
    DotNotFoundError
        Writing an image (or displaying one) needs Graphviz's ``dot`` program.

    Examples
    --------
    >>> import flowdispatch as fd
    >>> from flowdispatch.view.render import visualize
    >>> @fd.op
    ... def half(x):
    ...     if x % 2:
    ...         raise ValueError(f"{x} is odd")
    ...     return x // 2
    >>> res = fd.run(half(half(6)), executor="sync")
    >>> dot = visualize(res)
    >>> "failed" in dot.source and "3 is odd" in dot.source
    True
    >>> many = visualize([half(i) for i in range(0, 400, 2)], collapse=True)
    >>> "half ×200" in many.source
    True
    """
    graph, results = _subject(items)
    by_state = _by_state(color, results)
    fmt = _format(filename, format)
    if rankdir not in _RANKDIRS:
        raise ValueError(f"rankdir: expected one of {', '.join(_RANKDIRS)}, got {rankdir!r}")
    threshold = _threshold(collapse)
    dot = _draw(graph, results if by_state else None, rankdir, threshold)
    if fmt is not None:
        dot.format = fmt
    if filename is not None:
        _write(dot, filename, fmt)
    return dot


class _Layout(NamedTuple):
    """What keeps the layout of a live run's drawings the same from frame to frame.

    ``sizes``: ``{DOT node id: (width, height)}`` in inches, the least size of
    each node (the size of its widest label in any state); ``legend``: the
    states the legend lists, with a count of 0 too; ``counts``: the counts the
    legend shows instead of the real ones (when measuring).
    """

    sizes: dict[str, tuple[str, str]]
    legend: tuple[str, ...]
    counts: dict[str, int] | None = None


def _draw(graph: Graph, results: Results | None, rankdir: str, threshold: int | None,
          layout: _Layout | None = None) -> _Digraph:
    """The drawing of :func:`visualize`, from checked options."""
    dot = _Digraph(
        "flowdispatch",
        graph_attr={"rankdir": rankdir, "fontname": _FONT, "nodesep": "0.3", "ranksep": "0.4"},
        node_attr={"fontname": _FONT, "fontsize": "11", "style": "rounded,filled",
                   "fillcolor": "#F4F4F4", "color": "#555555", "margin": "0.12,0.05",
                   "height": "0.3"},
        edge_attr={"color": "#777777", "arrowsize": "0.6"},
    )
    sizes = layout.sizes if layout is not None else {}
    targets = {t._key for t in graph.targets}
    if threshold is not None and len(graph) > threshold:
        _draw_groups(dot, graph, results, targets, sizes)
    else:
        _draw_nodes(dot, graph, results, targets, sizes)
        for node in graph:
            for dep in graph.deps_of(node._key):
                dot.edge(dep._key, node._key)
        if results is not None:
            for node in graph:  # expanded into its children
                for child in results.children(node):
                    dot.edge(child._key, node._key, style="dashed", arrowhead="onormal")
    if results is not None:
        _draw_legend(dot, results, layout)
    return dot


def _measure(graph: Graph, templates: list[Results], rankdir: str, threshold: int | None,
             legend: tuple[str, ...]) -> _Layout:
    """The layout that fits every template: each node as large as in any of them.

    The templates are the run in made-up states that give each node its
    widest label (one ``dot`` call each); the legend's rows all get the width
    of the widest, drawn with the largest count.
    """
    most: dict[str, tuple[float, float]] = {}
    counts = dict.fromkeys(legend, len(graph))
    for results in templates:
        dot = _draw(graph, results, rankdir, threshold, _Layout({}, legend, counts))
        for obj in json.loads(dot.pipe(format="json"))["objects"]:
            if "width" in obj:  # a node, not the legend's cluster
                w, h = most.get(obj["name"], (0.0, 0.0))
                most[obj["name"]] = max(w, float(obj["width"])), max(h, float(obj["height"]))
    rows = [f"legend {state}" for state in legend]
    widest = max((most[row][0] for row in rows if row in most), default=0.0)
    for row in rows:
        if row in most:
            most[row] = widest, most[row][1]
    # a little more than measured, so that rounding never makes a label grow its node
    return _Layout({name: (f"{w + 0.01:.3f}", f"{h + 0.01:.3f}") for name, (w, h) in most.items()},
                   legend)


def _size(sizes: dict[str, tuple[str, str]], name: str) -> dict[str, str]:
    found = sizes.get(name)
    return {} if found is None else {"width": found[0], "height": found[1]}


# -- what to draw, and how ---------------------------------------------------------
def _subject(items: tuple[Any, ...]) -> tuple[Graph, Results | None]:
    if len(items) == 1 and isinstance(items[0], Results):
        return items[0].drawn_graph(), items[0]
    if len(items) == 1 and isinstance(items[0], Graph):
        return items[0], None
    if any(isinstance(item, (Graph, Results)) for item in items):
        raise TypeError("visualize: expected one Graph, one Results, or nodes; not a mix")
    if not items:
        raise TypeError("visualize: expected nodes (or containers of nodes), a Graph or a "
                        "Results, got nothing")
    return Graph(*items), None


def _by_state(color: Any, results: Results | None) -> bool:
    if color is None:
        return results is not None
    if color is False:
        return False
    if color == "state":
        if results is None:
            raise ValueError("color='state' colours nodes by what happened in a run: pass "
                             "the Results of fd.run(...), not nodes or a Graph")
        return True
    raise ValueError(f"color: expected None, 'state' or False, got {color!r}")


def _format(filename: Any, format: str | None) -> str | None:
    if format is None and filename is not None:
        format = os.path.splitext(os.fspath(filename))[1].lstrip(".").lower()
        if not format:
            raise ValueError(f"cannot tell the format of {os.fspath(filename)!r}: give it an "
                             f"extension ({', '.join(FORMATS)}) or pass format=")
    if format is not None and format.lower() not in FORMATS:
        raise ValueError(f"unknown format {format!r}; supported: {', '.join(FORMATS)}")
    return None if format is None else format.lower()


def _threshold(collapse: Any) -> int | None:
    if collapse is None:
        return _COLLAPSE_AT
    if collapse is True:
        return 0
    if collapse is False:
        return None
    if isinstance(collapse, int) and collapse >= 0:
        return collapse
    raise TypeError(f"collapse: expected a node count >= 0, True or False, got {collapse!r}")


def _write(dot: _Digraph, filename: Any, fmt: str | None) -> None:
    path = os.path.abspath(os.fspath(filename))
    if fmt in ("dot", "gv"):
        with open(path, "w", encoding="utf-8") as f:
            f.write(dot.source)
        return
    # The DOT source that render() saves first goes to a scratch directory, so
    # nothing is left next to the output (and no file of the user's is overwritten).
    with tempfile.TemporaryDirectory() as scratch, warnings.catch_warnings():
        warnings.simplefilter("ignore", graphviz.FormatSuffixMismatchWarning)
        warnings.simplefilter("ignore", graphviz.UnknownSuffixWarning)
        dot.render(filename=os.path.join(scratch, "graph.gv"), outfile=path, format=fmt,
                   cleanup=True)


# -- one DOT node per node ---------------------------------------------------------
def _draw_nodes(dot: _Digraph, nodes: Iterable[Node[Any]], results: Results | None,
                targets: set[str], sizes: dict[str, tuple[str, str]]) -> None:
    for node in nodes:
        key = node._key
        state = results.states.get(key) if results is not None else None
        details = _details(node, key, state, results)
        tooltip = [_call_text(node)]
        title, note = _title(node, count=True), ""
        if state is not None and results is not None:
            tooltip.append(_state_line(key, state, results))
            error = results.error(key)
            if error is not None and state in ("failed", "upstream_failed"):
                tooltip.append(_error_text(error))
            if error is not None and state == "failed":
                note = _error_note(error, max(_NOTE_CHARS, len(title)))
        look = _look(node._op is None, state, key in targets)
        dot.node(key, _label(title, " · ".join(details), note), tooltip=_tooltip(tooltip),
                 **look, **_size(sizes, key))


def _details(node: Node[Any], key: str, state: str | None, results: Results | None) -> list[str]:
    if node._op is None:
        return [_short(node._args[0], 24)]
    if state is None or results is None or state == "pending":
        return [f"#{tag}" for tag in node._op.settings.tags]
    out = [] if state == "done" else [state.replace("_", " ")]
    seconds = results.duration(key)
    if seconds is not None:
        out.append(_duration(seconds))
    tries = results.attempts(key)
    if tries > 1:
        out.append(f"attempt {tries}" if state == "running" else f"{tries} attempts")
    return out


def _look(data: bool, state: str | None, target: bool) -> dict[str, str]:
    look = {"shape": "ellipse" if data else "box"}
    if data and state is None:
        look["fillcolor"] = "#FFFFFF"
    if state is not None:
        look["fillcolor"], look["color"] = STATE_COLORS[state]
        if state in _STYLES:
            look["style"] = f"{'filled' if data else 'rounded,filled'},{_STYLES[state]}"
    if target:
        look["penwidth"] = "2.5"
    elif state in ("failed", "running"):
        look["penwidth"] = "1.5"
    return look


def _draw_legend(dot: _Digraph, results: Results, layout: _Layout | None) -> None:
    counts = Counter(results.states.values())
    shown = [state for state in _ALL_STATES if counts[state]]
    sizes = {}
    if layout is not None:  # the same rows in every frame of a live run
        counts = Counter(layout.counts or counts)
        shown = [state for state in _ALL_STATES if state in layout.legend or counts[state]]
        sizes = layout.sizes
    with dot.subgraph(name="cluster_legend") as legend:
        legend.attr(label="states", fontsize="10", fontcolor="#555555", style="rounded",
                    color="#BBBBBB", margin="6")
        for state in shown:
            legend.node(f"legend {state}", _label(f"{counts[state]} {state.replace('_', ' ')}"),
                        tooltip=f"{counts[state]} node(s) {state.replace('_', ' ')}",
                        **_look(False, state, False), **_size(sizes, f"legend {state}"))
        for above, below in zip(shown, shown[1:]):
            legend.edge(f"legend {above}", f"legend {below}", style="invis")


# -- collapsing: one DOT node per group ----------------------------------------------
def _draw_groups(dot: _Digraph, graph: Graph, results: Results | None, targets: set[str],
                 sizes: dict[str, tuple[str, str]]) -> None:
    depth: dict[str, int] = {}
    group_of: dict[str, int] = {}
    index: dict[tuple[Any, ...], int] = {}
    groups: list[list[Node[Any]]] = []
    edges: dict[tuple[int, int], None] = {}  # an ordered set
    for node in graph:  # topological: every dependency's group is already known
        key = node._key
        deps = graph.deps_of(key)
        depth[key] = level = 1 + max((depth[d._key] for d in deps), default=-1)
        tails = frozenset(group_of[d._key] for d in deps)
        gid = group_of[key] = index.setdefault((node._op is None, _title(node), level, tails),
                                               len(groups))
        if gid == len(groups):
            groups.append([])
        groups[gid].append(node)
        for tail in tails:
            edges[tail, gid] = None
    ids = []
    for gid, members in enumerate(groups):
        if len(members) == 1:
            ids.append(members[0]._key)
            _draw_nodes(dot, members, results, targets, sizes)
        else:
            ids.append(f"{members[0].name} ×{len(members)} (group {gid})")
            _draw_group(dot, ids[-1], members, results, targets, sizes)
    for tail, head in edges:
        dot.edge(ids[tail], ids[head])


def _draw_group(dot: _Digraph, gid: str, members: list[Node[Any]], results: Results | None,
                targets: set[str], sizes: dict[str, tuple[str, str]]) -> None:
    first = members[0]
    title = f"{_title(first)} ×{len(members)}"
    tooltip = [f"{len(members)} calls like {_call_text(first)}"]
    detail = ""
    state = None
    if results is not None:
        counts = Counter(results.states.get(n._key) for n in members)
        parts = [f"{counts[s]} {s.replace('_', ' ')}" for s in _ALL_STATES if counts[s]]
        detail = ", ".join(parts)
        state = next((s for s in _WORSE_FIRST if counts[s]), None)
        seconds = sum(results.duration(n._key) or 0.0 for n in members)
        tooltip.append(f"{detail}; {_duration(seconds)} in all")
        errors = [(n._key, error) for n in members if results.states.get(n._key) == "failed"
                  and (error := results.error(n._key)) is not None]
        tooltip += [f"{key}: {_error_text(err)}" for key, err in errors[:3]]
        if len(errors) > 3:
            tooltip.append(f"... and {len(errors) - 3} more failed")
    look = _look(first._op is None, state, any(n._key in targets for n in members))
    dot.node(gid, _label(title, detail), tooltip=_tooltip(tooltip),
             peripheries="2", **look, **_size(sizes, gid))


# -- text --------------------------------------------------------------------------
def _title(node: Node[Any], count: bool = False) -> str:
    """What a node is called in the drawing: ``inc``, ``[0]``, ``.upper()``, ``collect (3)``."""
    fn, args = node._fn, node._args
    if fn is operator.getitem and len(args) == 2:
        return f"[{_short(args[1], 20)}]"
    if fn is getattr and len(args) == 2 and isinstance(args[1], str):
        return f".{args[1]}"
    if fn is _call_method:
        return f".{args[1]}()"
    if fn is _collect and count:
        return f"{node.name} ({len(args)})"
    return node.name


def _call_text(node: Node[Any]) -> str:
    """The call that makes a node, as code: ``add(x=<inc-…>, y=3)``."""
    fn, args, kwargs = node._fn, node._args, node._kwargs or {}
    if node._op is None:
        text = f"{node.name} = {_short(args[0], 200)}"
    elif fn is operator.getitem and len(args) == 2:
        text = f"{_short(args[0])}[{_short(args[1])}]"
    elif fn is getattr and len(args) == 2:
        text = f"{_short(args[0])}.{args[1]}"
    elif fn is _call_method:
        text = f"{_short(args[0])}.{args[1]}({_arguments(None, args[2:], kwargs)})"
    else:
        text = f"{node.name}({_arguments(getattr(node._op, '_self_sig', None), args, kwargs)})"
    return _truncate(text, 200)


def _arguments(sig: inspect.Signature | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    bound: inspect.BoundArguments | None = None
    if sig is not None:
        try:
            bound = sig.bind(*args, **kwargs)
        except TypeError:
            pass
    if bound is None:
        return ", ".join([*map(_short, args), *(f"{k}={_short(v)}" for k, v in kwargs.items())])
    parts: list[str] = []
    for name, value in bound.arguments.items():
        kind = bound.signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_POSITIONAL:
            parts += map(_short, value)
        elif kind is inspect.Parameter.VAR_KEYWORD:
            parts += (f"{k}={_short(v)}" for k, v in value.items())
        elif kind is inspect.Parameter.POSITIONAL_ONLY:
            parts.append(_short(value))
        else:
            parts.append(f"{name}={_short(value)}")
    return ", ".join(parts)


class _Repr(reprlib.Repr):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.maxlevel = 2
        self.maxlist = self.maxtuple = self.maxset = self.maxfrozenset = size // 6
        self.maxdict = size // 8
        self.maxstring = self.maxother = size
        self.fillvalue = "…"

    def repr_Node(self, node: Node[Any], level: int) -> str:  # noqa: N802 - reprlib's naming
        return f"<{node.name}-…>"


_repr_short, _repr_long = _Repr(24).repr, _Repr(120).repr


def _short(obj: Any, limit: int = 40) -> str:
    """A one-line repr of at most ``limit`` characters; nodes read ``<name-…>``."""
    text = (_repr_long if limit > 60 else _repr_short)(obj)
    return _truncate(" ".join(text.split()), limit)


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _duration(seconds: float) -> str:
    """``40 µs``, ``3.5 ms``, ``12 ms``, ``1.5 s``, ``2 min 5 s``, ``1 h 02 min``."""
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 0.01:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def _state_line(key: str, state: str, results: Results) -> str:
    line = state.replace("_", " ")
    seconds = results.duration(key)
    tries = results.attempts(key)
    if tries > 1:
        line += f" after {tries} attempts"
    if seconds is not None:
        line += f" ({_duration(seconds)})"
    return line


def _error_text(error: BaseException) -> str:
    if isinstance(error, UpstreamError):
        cause = error.error
        why = f" with {type(cause).__name__}: {cause}" if cause is not None else ""
        return _truncate(f"did not run: upstream {error.upstream} failed{why}", 300)
    return _truncate(f"{type(error).__name__}: {error}", 300)


def _escape(text: str) -> str:
    r"""Text for a DOT escString (tooltips, labels): backslashes and newlines as written.

    Each backslash is written ``\\`` plus a zero-width space, so it never pairs
    with the next character: Graphviz turns ``\N``, ``\G``, ... into names,
    and some versions unescape tooltips twice.
    """
    return text.replace("\\", "\\\\\u200b").replace("\r", "").replace("\n", "\\n")


def _tooltip(lines: list[str]) -> str:
    """A tooltip of several lines (never mistaken for an HTML-like ``<...>`` label)."""
    tooltip: str = graphviz.nohtml(_escape("\n".join(lines)))
    return tooltip


def _label(title: str, detail: str = "", note: str = "") -> str:
    """An HTML-like label: the title, a smaller grey detail line, and a note (an error)."""
    text = _escape(html.escape(" ".join(title.split()), quote=False))
    if detail:
        text += _DETAIL.format(_escape(html.escape(" ".join(detail.split()), quote=False)))
    if note:
        text += _NOTE.format(_escape(html.escape(" ".join(note.split()), quote=False)))
    return f"<{text}>"


def _error_note(error: BaseException, limit: int) -> str:
    """A failed node's error in a few words, for under its name: the message, or the type."""
    lines = str(error).strip().splitlines()
    return _truncate(lines[0] if lines else type(error).__name__, limit)


# -- a table for Jupyter ---------------------------------------------------------------
def results_html(results: Results, drawing: bool = False) -> str:
    """A short HTML summary of a run: nodes per state, op time, and the failures.

    Parameters
    ----------
    results
        What :func:`flowdispatch.run` returned.
    drawing
        Add the graph coloured by state under the tables, as a PNG image (what
        a notebook shows, trusted or not; without Graphviz's ``dot``, a note
        saying how to get it).

    Examples
    --------
    >>> import flowdispatch as fd
    >>> from flowdispatch.view.render import results_html
    >>> boom = fd.op(lambda: 1 / 0, name="boom")
    >>> page = results_html(fd.run(boom(), executor="sync"))
    >>> "ZeroDivisionError: division by zero" in page
    True
    """
    picture = ""
    if drawing:
        try:
            picture = _img(base64.b64encode(visualize(results).png()).decode("ascii"))
        except DotNotFoundError as exc:
            picture = f"<p><em>{html.escape(str(exc))}</em></p>"
    return _summary_html(results) + picture + "</div>"


def results_bundle(results: Results, dot: graphviz.Digraph | None = None, include: Any = None,
                   exclude: Any = None) -> dict[str, str]:
    """What Jupyter shows for the results of a run (their ``_repr_mimebundle_``).

    ``text/html``: the summary of :func:`results_html` with the drawing as a
    PNG image, which notebooks keep even when untrusted; ``image/svg+xml``:
    the drawing alone, for front ends without HTML (``image/png`` too when
    asked for with ``include``); and ``text/plain``. ``dot`` is the drawing
    (by default ``visualize(results)``).

    Examples
    --------
    >>> import flowdispatch as fd
    >>> from flowdispatch.view.render import results_bundle
    >>> res = fd.run(fd.op(sum)([1, 2]), executor="sync")
    >>> sorted(results_bundle(res))
    ['image/svg+xml', 'text/html', 'text/plain']
    >>> '<img src="data:image/png;base64,' in results_bundle(res)["text/html"]
    True
    """
    dot = visualize(results) if dot is None else dot
    wanted = set(include) if include is not None else {"text/html", "image/svg+xml"}
    wanted -= set(exclude or ())
    html_too = "text/html" in wanted
    try:
        bundle = dot._repr_mimebundle_(include=wanted | ({"image/png"} if html_too else set()))
        picture = _img(bundle["image/png"]) if html_too else ""
    except DotNotFoundError as exc:
        bundle, picture = {}, f"<p><em>{html.escape(str(exc))}</em></p>"
    bundle = {mime: data for mime, data in bundle.items() if mime in wanted}
    if html_too:
        bundle["text/html"] = _summary_html(results) + picture + "</div>"
    bundle["text/plain"] = repr(results)
    return bundle


def _img(png: str) -> str:
    """An ``<img>`` of a base64 PNG, which HTML sanitizers keep (unlike inline SVG)."""
    return (f'<img src="data:image/png;base64,{png}" alt="the graph of the run, coloured by '
            f'state" style="max-width:100%">')


def _summary_html(results: Results) -> str:
    """The opening ``<div>``, the count per state and the failures (not closed)."""
    counts = Counter(results.states.values())
    rows = "".join(
        f'<tr><td><span style="display:inline-block;width:0.9em;height:0.9em;'
        f'vertical-align:middle;margin-right:0.4em;background:{fill};border:1px solid '
        f'{border}"></span>{state.replace("_", " ")}</td>'
        f'<td style="text-align:right">{counts[state]}</td></tr>'
        for state, (fill, border) in STATE_COLORS.items() if counts[state]
    )
    seconds = sum(results.duration(k) or 0.0 for k in results.states)
    failed = [(k, results.error(k)) for k, s in results.states.items() if s == "failed"]
    out = [
        '<div class="flowdispatch-results">',
        f"<strong>{len(results)} nodes</strong>, {_duration(seconds)} of op time",
        f"<table><tbody>{rows}</tbody></table>",
    ]
    if failed:
        items = "".join(
            f"<tr><td><code>{html.escape(key)}</code></td>"
            f"<td><code>{html.escape(_error_text(error) if error else 'failed')}</code></td></tr>"
            for key, error in failed[:10]
        )
        more = f"<p>... and {len(failed) - 10} more</p>" if len(failed) > 10 else ""
        out.append(f"<table><thead><tr><th>failed</th><th>error</th></tr></thead>"
                   f"<tbody>{items}</tbody></table>{more}")
    return "".join(out)
