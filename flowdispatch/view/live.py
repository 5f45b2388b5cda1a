"""Live graph: the graph of a run, redrawn in place in a notebook while it runs.

:class:`LiveGraph` is a callback (``progress="graph"``). From the hooks that
every executor calls, it keeps the state of each node itself: ``pending``
until it starts, ``running`` (with its attempt and the time so far), then
``done`` or ``failed``, or ``upstream_failed`` when the run says an
ancestor failed; nodes given in ``overrides`` are ``skipped``. Nodes that join
the run as nodes expand appear, ``pending``, with dashed edges to the node
that made them (their layout is not measured ahead). Each drawing is a
:class:`Frame`, drawn by :func:`flowdispatch.visualize`, which shows in
Jupyter as an SVG (the last one as the results do). The first frame is
shown with ``IPython.display.display(frame, display_id=True)`` and later ones replace
it with ``handle.update(frame)``: no server and no widget, only the kernel.

Throttling: a hook only records the change and, if none is running, starts a
drawing thread. That thread draws the latest states at most once every
``interval`` seconds, and after a drawing that took ``t`` seconds it waits at
least ``9 t``, so drawing takes at most a tenth of a run however large the
graph (large graphs collapse as in :func:`~flowdispatch.visualize`). It ends
as soon as nothing is left to draw. The last frame is drawn from the run's
:class:`~flowdispatch.Results`, and shows what displaying them shows: the
count per state and the table of failures, then the drawing.

The layout stays put: before the first frame, the run is drawn (not shown)
in made-up states that give each node its widest label, and every frame
draws each node at least that large, with the same rows in the legend, so
``dot`` places everything where it was. A failed node shows the first words
of its error under its name.

Outside a notebook (no IPython kernel to display in), a ``LiveGraph``
without a ``handle`` shows the tqdm progress bar of ``progress=True``.

Examples
--------
>>> import flowdispatch as fd
>>> from flowdispatch.view.live import LiveGraph
>>> class Screen:  # anything with update(frame), like an IPython DisplayHandle
...     def __init__(self):
...         self.frames = []
...     def update(self, frame):
...         self.frames.append(frame)
>>> screen = Screen()
>>> inc = fd.op(lambda x: x + 1, name="inc")
>>> res = fd.run(inc(inc(1)), executor="sync", callbacks=[LiveGraph(screen)])
>>> screen.frames[0]
<LiveGraph frame: 2 pending>
>>> screen.frames[-1], screen.frames[-1].final
(<Results: 2 done>, True)
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import graphviz

from ..core.callbacks import Callback
from ..core.results import STATES, Dynamic, Results
from ..errors import DotNotFoundError, UpstreamError
from .progress import ProgressBar
from .render import (
    _RANKDIRS,
    LIVE_STATES,
    _draw,
    _Layout,
    _measure,
    _threshold,
    results_bundle,
    visualize,
)

if TYPE_CHECKING:
    from ..core.graph import Graph
    from ..core.node import Node

__all__ = ["Frame", "LiveGraph"]

_log = logging.getLogger(__name__)
_SLOWDOWN = 9  # wait at least this many times as long as the last drawing took
_LEGEND = ("pending", "running", "done", "failed", "upstream_failed")  # in every frame
_TEMPLATE_SECONDS = 0.888  # a duration as wide as most ("888 ms", "12.5 s")


class Frame:
    """One drawing of a run: the states of its nodes at one moment.

    Shown by Jupyter as an SVG of the graph, with a text summary for other
    front ends. The last frame, which stays in the notebook, shows what
    displaying the results does: the count per state and the failures, then
    the drawing, as a PNG that untrusted notebooks show too. The drawing is
    made when first asked for.

    Attributes
    ----------
    results : Results
        The states, errors, durations and attempts drawn; in a frame before
        the end, states include ``"pending"`` and ``"running"``.
    final : bool
        True for the last frame, drawn from the run's own results.
    """

    __slots__ = ("_dot", "_layout", "_options", "final", "results")

    def __init__(self, results: Results, final: bool = False, *, layout: _Layout | None = None,
                 **options: Any):
        self.results: Results = results
        self.final: bool = final
        self._options = options
        self._layout = layout  # the same in every frame of a run
        self._dot: graphviz.Digraph | None = None

    @property
    def states(self) -> dict[str, str]:
        """``{key: state}`` for every node of the run."""
        return self.results.states

    @property
    def counts(self) -> dict[str, int]:
        """How many nodes are in each state."""
        counts = Counter(self.results.states.values())
        return {s: counts[s] for s in (*STATES, *LIVE_STATES) if counts[s]}

    @property
    def dot(self) -> graphviz.Digraph:
        """The drawing (see :func:`flowdispatch.visualize`)."""
        layout = self._layout
        if self._dot is None and layout is None:
            self._dot = visualize(self.results, **self._options)
        elif self._dot is None and layout is not None:
            # the last frame's legend, as the results', has no 0 rows
            layout = layout._replace(legend=()) if self.final else layout
            self._dot = _draw(self.results.graph, self.results, self._options["rankdir"],
                              _threshold(self._options["collapse"]), layout)
        return self._dot

    def __repr__(self) -> str:
        if self.final:
            return repr(self.results)
        counts = ", ".join(f"{n} {s}" for s, n in self.counts.items())
        return f"<LiveGraph frame: {counts}>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        if self.final:  # what displaying the results shows: the summary, then the drawing
            return results_bundle(self.results, self.dot, include, exclude)
        # Only the last frame stays in the notebook (and needs a PNG for untrusted views);
        # the others show while the cell runs, trusted, and drawing only SVG halves their cost.
        try:
            bundle = self.dot._repr_mimebundle_(include or ["image/svg+xml"], exclude)
        except DotNotFoundError as exc:
            return {"text/plain": f"{self!r}\n{exc}"}
        return {**bundle, "text/plain": repr(self)}


def _notebook_display() -> Any:
    """IPython's ``display`` when running in a kernel that shows rich output, else None."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    if shell is None or getattr(shell, "kernel", None) is None:  # no IPython, or a terminal
        return None
    from IPython.display import display

    return display


class LiveGraph(Callback):
    """Redraw the graph in place as the run goes on (``progress="graph"``).

    Parameters
    ----------
    handle
        Where to show the frames: an object with ``update(frame)``, such as an
        ``IPython.display.DisplayHandle``. By default a new display in the
        notebook cell that runs; outside a notebook, a tqdm progress bar instead.
    interval
        Seconds between two drawings, at least (the first and last are always drawn).
    collapse, rankdir
        As for :func:`flowdispatch.visualize`.

    Examples
    --------
    ``progress="graph"`` is ``callbacks=[LiveGraph()]``; to set its options,
    pass one yourself. In a notebook, this redraws the graph left to right at
    most once a second; elsewhere it shows a progress bar (on stderr).

    >>> import flowdispatch as fd
    >>> total = fd.op(sum)([1, 2])
    >>> fd.run(total, executor="sync", callbacks=[LiveGraph(interval=1.0, rankdir="LR")])
    <Results: 1 done>
    """

    def __init__(self, handle: Any = None, *, interval: float = 0.2,
                 collapse: int | bool | None = None, rankdir: str = "TB"):
        if not isinstance(interval, (int, float)) or interval < 0:
            raise ValueError(f"interval: expected seconds >= 0, got {interval!r}")
        if handle is not None and not callable(getattr(handle, "update", None)):
            raise TypeError(f"handle: expected an object with an update(frame) method, such as "
                            f"an IPython DisplayHandle; got {type(handle).__name__}")
        if rankdir not in _RANKDIRS:
            raise ValueError(f"rankdir: expected one of {', '.join(_RANKDIRS)}, got {rankdir!r}")
        _threshold(collapse)  # fail here, not in the drawing thread
        self.handle = handle
        self.interval: float = float(interval)
        self._options: dict[str, Any] = {"collapse": collapse, "rankdir": rankdir}
        self._given = handle is not None
        self._bar: ProgressBar | None = None
        self._lock = threading.Lock()  # guards the states, shared with the drawing thread
        self._drawing = threading.Lock()  # one drawing at a time, the last one last
        self._start_run(None)

    def _start_run(self, graph: Graph | None) -> None:
        self._graph = graph
        self._states: dict[str, str] = {}
        self._errors: dict[str, BaseException] = {}
        self._durations: dict[str, float] = {}
        self._attempts: dict[str, int] = {}
        self._started: dict[str, float] = {}
        self._joined: dict[str, Node[Any]] = {}  # nodes that joined the run as nodes expanded
        self._children: dict[str, list[str]] = {}
        self._layout: _Layout | None = None
        self._version = self._drawn = 0
        self._next_at = 0.0
        self._finished = False
        self._broken = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the hooks (all from the thread that drives the run) -------------------------
    def on_start(self, *, graph: Graph) -> None:
        with self._lock:
            self._start_run(graph)
            self._states = dict.fromkeys((n._key for n in graph), "pending")
            self._states.update(dict.fromkeys((n._key for n in graph.inputs), "skipped"))
        if not self._given:  # a new display for each run, in the cell that runs it
            self.handle, display = None, _notebook_display()
            self._bar = ProgressBar() if display is None else None
            if self._bar is not None:
                self._bar.on_start(graph=graph)
                return
            self._layout = self._measure()
            self._show(self._frame(), display)
        else:
            self._layout = self._measure()
            self._show(self._frame())

    def on_expand(self, *, node: Node[Any], children: tuple[Node[Any], ...],
                  nodes: tuple[Node[Any], ...]) -> None:
        if self._bar is not None:
            self._bar.on_expand(node=node, children=children, nodes=nodes)
            return
        with self._lock:  # the drawing grows: the new nodes, pending, below their parent
            for new in nodes:
                self._joined[new._key] = new
                self._states.setdefault(new._key, "pending")
            self._children[node._key] = [child._key for child in children]
            self._changed()

    def on_node_start(self, *, node: Node[Any], attempt: int) -> None:
        if self._bar is not None:
            return
        key = node._key
        with self._lock:
            self._states[key] = "running"
            self._attempts[key] = attempt
            self._started[key] = time.perf_counter()
            self._changed()

    def on_node_finish(self, *, node: Node[Any], duration: float) -> None:
        if self._bar is not None:
            self._bar.on_node_finish(node=node, duration=duration)
            return
        key = node._key
        with self._lock:
            self._states[key] = "done"
            self._durations[key] = duration
            self._started.pop(key, None)
            self._changed()

    def on_node_error(self, *, node: Node[Any], error: BaseException) -> None:
        if self._bar is not None:
            self._bar.on_node_error(node=node, error=error)
            return
        key = node._key
        with self._lock:
            self._states[key] = "failed"
            self._errors[key] = error
            started = self._started.pop(key, None)
            if started is not None:
                self._durations[key] = time.perf_counter() - started
            self._changed()

    def on_node_upstream_failed(self, *, node: Node[Any], error: UpstreamError) -> None:
        if self._bar is not None:
            self._bar.on_node_upstream_failed(node=node, error=error)
            return
        with self._lock:
            self._states[node._key] = "upstream_failed"
            self._errors[node._key] = error
            self._changed()

    def on_finish(self, *, results: Results) -> None:
        if self._bar is not None:
            self._bar.on_finish(results=results)
            return
        with self._lock:
            self._finished = True
            thread = self._thread
        self._stop.set()
        self._show(Frame(results, final=True, layout=self._layout, **self._options), final=True)
        if thread is not None:
            thread.join(timeout=5)

    # -- drawing ------------------------------------------------------------------------
    def _changed(self) -> None:
        """Note a change (holding the lock); start the drawing thread if none runs."""
        self._version += 1
        if self._thread is None and not self._finished and not self._broken:
            self._thread = threading.Thread(target=self._draw_changes, args=(self._stop,),
                                            name="flowdispatch-live", daemon=True)
            self._thread.start()

    def _draw_changes(self, stop: threading.Event) -> None:
        """The drawing thread: draw the latest states when due, until nothing is new."""
        while True:
            wait = self._next_at - time.monotonic()
            if wait > 0 and stop.wait(wait):
                return  # the run is over: on_finish draws the last frame
            with self._lock:
                if self._finished or self._broken or self._version == self._drawn:
                    self._thread = None
                    return
                self._drawn = self._version
                frame = self._frame()
            self._show(frame)

    def _frame(self) -> Frame:
        """The current states (holding the lock, or before the run starts)."""
        durations = dict(self._durations)
        now = time.perf_counter()
        for key, started in self._started.items():
            durations[key] = now - started
        dynamic = None
        if self._joined and self._graph is not None:
            dynamic = Dynamic({**self._graph.nodes, **self._joined}, dict(self._children), {})
        # before the run starts there is no graph yet: a frame of no nodes
        results = Results(self._graph, dict(self._states), errors=dict(self._errors),  # type: ignore[arg-type]
                          durations=durations, attempts=dict(self._attempts), dynamic=dynamic)
        return Frame(results, layout=self._layout, **self._options)

    def _measure(self) -> _Layout | None:
        """The layout of every frame: each node as large as its widest label in any state.

        The run is drawn (not shown) in made-up states: all running, all failed,
        all upstream failed, and the states in turn (for collapsed groups).
        """
        graph = self._graph
        assert graph is not None, "measured in on_start, once the graph is known"
        keys = [key for key, state in self._states.items() if state == "pending"]
        turns = ("done", "failed", "upstream_failed", "running", "pending")
        tries = {n._key: n._op.settings.retries + 1 for n in graph if n._op is not None}
        templates = []
        for made_up in ({k: turns[i % len(turns)] for i, k in enumerate(keys)},
                        *(dict.fromkeys(keys, state) for state in turns[1:4])):
            states = {**self._states, **made_up}
            errors: dict[str, BaseException] = {
                k: ValueError("o" * 200) for k, s in states.items() if s == "failed"}
            ran = [k for k in keys if states[k] in ("running", "done", "failed")]
            templates.append(Results(graph, states, errors=errors,
                                     durations=dict.fromkeys(ran, _TEMPLATE_SECONDS),
                                     attempts={k: tries[k] for k in ran if k in tries}))
        legend = tuple(s for s in (*STATES, *LIVE_STATES)
                       if s in _LEGEND or s in self._states.values())
        try:
            return _measure(graph, templates, self._options["rankdir"],
                            _threshold(self._options["collapse"]), legend)
        except DotNotFoundError:
            return None  # each frame says how to install it
        except graphviz.CalledProcessError:  # a Graphviz too old for JSON output
            _log.warning("the live graph's layout may move: measuring it failed", exc_info=True)
            return None

    def _show(self, frame: Frame, display: Any = None, final: bool = False) -> None:
        with self._drawing:
            if self._broken or (self._finished and not final):
                return
            start = time.monotonic()
            try:
                if display is not None:
                    self.handle = display(frame, display_id=True)
                else:
                    self.handle.update(frame)
            except Exception:
                self._broken = True
                _log.warning("the live graph stopped: showing a frame failed", exc_info=True)
                return
            end = time.monotonic()
            self._next_at = end + max(self.interval, _SLOWDOWN * (end - start))
