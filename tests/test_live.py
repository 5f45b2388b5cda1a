"""Tests for flowdispatch.live: the graph redrawn as a run goes, through real runs."""

from __future__ import annotations

import base64
import json
import logging
import re
import shutil
import threading
import time

import pytest

import flowdispatch as fd
from flowdispatch.view import live
from flowdispatch.view.live import Frame, LiveGraph
from flowdispatch.view.render import STATE_COLORS

needs_dot = pytest.mark.skipif(shutil.which("dot") is None,
                               reason="Graphviz's dot is not installed")

WAIT = 10.0  # seconds: the longest any op waits for a frame (a correct run needs far less)
# The changes a node's state may show from one frame to the next (a frame may miss
# the short time a node ran, but never shows a node going back).
STEPS = {("pending", "running"), ("running", "done"), ("running", "failed"),
         ("pending", "done"), ("pending", "failed"), ("pending", "upstream_failed")}


class Screen:
    """A stand-in for IPython's DisplayHandle: keeps every frame, and when it came."""

    def __init__(self, cost: float = 0.0):
        self.cost = cost  # seconds that showing a frame takes
        self.frames: list[Frame] = []
        self.times: list[float] = []
        self._changed = threading.Condition()

    def update(self, frame: Frame) -> None:
        now = time.monotonic()
        if self.cost:
            time.sleep(self.cost)  # what drawing an SVG costs, not synchronisation
        with self._changed:
            self.frames.append(frame)
            self.times.append(now)
            self._changed.notify_all()

    def wait_for(self, shows) -> bool:
        """Wait until a frame shows what ``shows(states)`` looks for."""
        with self._changed:
            return self._changed.wait_for(
                lambda: any(shows(frame.states) for frame in self.frames), timeout=WAIT)


def histories(frames: list[Frame]) -> dict[str, list[str]]:
    """Each node's states over the frames, repeats dropped."""
    out: dict[str, list[str]] = {}
    for frame in frames:
        for key, state in frame.states.items():
            seen = out.setdefault(key, [])
            if not seen or seen[-1] != state:
                seen.append(state)
    return out


def node_line(frame: Frame, key: str) -> str:
    found = [line for line in frame.dot.source.splitlines() if line.startswith(f'\t"{key}" [')]
    assert len(found) == 1
    return found[0]


def executor(name: str):
    return fd.ThreadExecutor(max_workers=4) if name == "threads" else name


# -- the states a run goes through ----------------------------------------------------
@pytest.mark.parametrize("name", ["sync", "threads"])
def test_frames_follow_the_run_from_pending_to_done_and_failed(name):
    screen = Screen()
    keys: dict[str, str] = {}

    def shows(**want: str):
        return lambda states: all(states[keys[n]] == s for n, s in want.items())

    @fd.op(priority=2)
    def first():
        assert screen.wait_for(shows(first="running", second="pending")), "no frame: first running"
        return 1

    @fd.op(priority=1)
    def second(x):
        assert screen.wait_for(shows(first="done", second="running")), "no frame: second running"
        raise ValueError("second fails")

    @fd.op
    def third(x):
        return x

    @fd.op(priority=0)
    def last():
        assert screen.wait_for(shows(second="failed", third="upstream_failed", last="running")), \
            "no frame: second failed, third upstream failed"
        return 2

    nodes = {"first": (a := first()), "second": (b := second(a)), "third": third(b),
             "last": last()}
    keys.update({n: node.key for n, node in nodes.items()})
    res = fd.run(nodes["third"], nodes["last"], executor=executor(name),
                 callbacks=[LiveGraph(screen, interval=0.01)])

    assert {n: res.state(node) for n, node in nodes.items()} == {
        "first": "done", "second": "failed", "third": "upstream_failed", "last": "done"}
    assert set(screen.frames[0].states.values()) == {"pending"}
    final = screen.frames[-1]
    assert final.final and final.results is res and final.states == res.states
    assert not any(frame.final for frame in screen.frames[:-1])
    during = {s for frame in screen.frames[:-1] for s in frame.states.values()}
    assert during == {"pending", "running", "done", "failed", "upstream_failed"}
    seen = histories(screen.frames)
    assert {n: seen[key] for n, key in keys.items()} == {
        "first": ["pending", "running", "done"], "second": ["pending", "running", "failed"],
        "third": ["pending", "upstream_failed"], "last": ["pending", "running", "done"]}


def layout(frame: Frame) -> tuple:
    """Where dot puts the drawing: its box, each node's place and size, the legend's box."""
    drawn = json.loads(frame.dot.pipe(format="json"))
    nodes = {o["name"]: (o["pos"], o["width"], o["height"]) for o in drawn["objects"]
             if "pos" in o}
    legend = [o["bb"] for o in drawn["objects"] if o["name"] == "cluster_legend"]
    return drawn["bb"], nodes, legend


@needs_dot
def test_the_layout_stays_put_from_frame_to_frame_and_errors_show_under_their_node():
    screen = Screen()
    keys: dict[str, str] = {}

    def shows(**want: str):
        return lambda states: all(states[keys[n]] == s for n, s in want.items())

    @fd.op(priority=2, retries=1, retry_on=ConnectionError)
    def fetch():
        assert screen.wait_for(shows(fetch="running")), "no frame: fetch running"
        return 1

    @fd.op(priority=1)
    def check(x):
        assert screen.wait_for(shows(fetch="done", check="running")), "no frame: check running"
        raise ValueError("2024-03 is corrupt\nand more lines")

    @fd.op(priority=0)
    def last():
        assert screen.wait_for(shows(check="failed", report="upstream_failed")), \
            "no frame: check failed"
        return 2

    report = fd.op(lambda x: x, name="report")
    nodes = {"fetch": (a := fetch()), "check": (b := check(a)), "report": report(b),
             "last": last()}
    keys.update({n: node.key for n, node in nodes.items()})
    fd.run(nodes["report"], nodes["last"], executor="sync",
           callbacks=[LiveGraph(screen, interval=0.01)])

    frames, final = screen.frames[:-1], screen.frames[-1]
    assert {s for frame in frames for s in frame.states.values()} == {
        "pending", "running", "done", "failed", "upstream_failed"}
    first = layout(frames[0])
    for frame in frames:
        assert layout(frame) == first, frame
    failed = next(f for f in frames if f.states[keys["check"]] == "failed")
    assert ">2024-03 is corrupt</FONT>" in node_line(failed, keys["check"])
    sizes = {k: place[1:] for k, place in first[1].items() if not k.startswith("legend")}
    assert {k: place[1:] for k, place in layout(final)[1].items() if k in sizes} == sizes
    page = final._repr_mimebundle_()["text/html"]  # the view of the results, as in a notebook
    assert page.index("<th>failed</th>") < page.index('<img src="data:image/png;base64,')
    assert "ValueError: 2024-03 is corrupt" in page


@pytest.mark.parametrize("name", ["sync", "threads", "processes"])
def test_every_local_executor_drives_it_to_the_final_states(name):
    screen = Screen()
    inc = fd.op(lambda x: x + 1, name="inc")
    half = fd.op(lambda x: x / 0 if x % 2 else x // 2, name="half")
    nodes = [inc(i) for i in range(6)]
    targets = [half(n) for n in nodes] + [fd.op(sum, name="total")(nodes)]
    res = fd.run(targets, executor=name, callbacks=[LiveGraph(screen, interval=0.0)])
    assert res.counts == {"done": 10, "failed": 3}
    assert screen.frames[-1].states == res.states and screen.frames[-1].final
    assert set(screen.frames[0].states.values()) == {"pending"}
    for key, seen in histories(screen.frames).items():
        assert set(zip(seen, seen[1:])) <= STEPS, f"{key}: {seen}"
        assert seen[-1] == res.states[key]


def test_a_running_node_is_drawn_with_its_attempt_and_the_final_frame_as_results_are():
    screen = Screen()
    tries: list[int] = []
    keys: dict[str, str] = {}

    @fd.op(retries=2, retry_on=ConnectionError)
    def fetch():
        tries.append(1)
        if len(tries) < 2:
            raise ConnectionError("flaky")
        assert screen.wait_for(lambda states: states[keys["fetch"]] == "running"
                               and len(screen.frames[-1].results._attempts) == 1
                               and screen.frames[-1].results.attempts(keys["fetch"]) == 2)
        return "page"

    node = fetch()
    keys["fetch"] = node.key
    res = fd.run(node, executor="sync", callbacks=[LiveGraph(screen, interval=0.01)])
    assert res[node] == "page" and res.attempts(node) == 2
    running = next(f for f in screen.frames if f.results.attempts(node) == 2)
    line = node_line(running, node.key)
    assert f'fillcolor="{STATE_COLORS["running"][0]}"' in line
    assert "attempt 2" in line
    pending = node_line(screen.frames[0], node.key)
    assert f'fillcolor="{STATE_COLORS["pending"][0]}"' in pending
    sized = re.compile(r" (height|width)=[\d.]+")  # the frames' nodes keep one size
    assert sized.sub("", screen.frames[-1].dot.source) == sized.sub("", res.visualize().source)
    assert "2 attempts" in node_line(screen.frames[-1], node.key)


def test_overridden_nodes_are_skipped_from_the_first_frame():
    screen = Screen()
    inc = fd.op(lambda x: x + 1, name="inc")
    a = inc(1)
    b = inc(a)
    res = fd.run(b, executor="sync", overrides={a: 10}, callbacks=[LiveGraph(screen)])
    assert res[b] == 11
    assert screen.frames[0].states == {a.key: "skipped", b.key: "pending"}
    assert screen.frames[-1].states == {a.key: "skipped", b.key: "done"}


# -- throttling --------------------------------------------------------------------------
def test_frames_come_at_most_once_per_interval():
    screen = Screen()
    step = fd.op(lambda x: time.sleep(0.002) or x, name="step")  # work, not a wait
    nodes = [step(i) for i in range(150)]
    start = time.monotonic()
    fd.run(nodes, executor="sync", callbacks=[LiveGraph(screen, interval=0.05)])
    elapsed = time.monotonic() - start
    gaps = [b - a for a, b in zip(screen.times[:-1], screen.times[1:-1])]  # the last is due
    assert gaps and min(gaps) >= 0.05 - 0.002
    assert len(screen.frames) <= 2 + elapsed / 0.05
    assert not [t for t in threading.enumerate() if t.name == "flowdispatch-live"]


def test_slow_drawings_are_spaced_out_so_drawing_takes_a_tenth_of_the_run():
    screen = Screen(cost=0.02)
    step = fd.op(lambda x: time.sleep(0.002) or x, name="step")
    start = time.monotonic()
    fd.run([step(i) for i in range(200)], executor="sync",
           callbacks=[LiveGraph(screen, interval=0.0)])
    elapsed = time.monotonic() - start
    gaps = [b - a for a, b in zip(screen.times[:-1], screen.times[1:-1])]
    assert gaps and min(gaps) >= 10 * 0.02 - 0.002  # the drawing, then nine times as long
    assert len(screen.frames) * 0.02 <= 0.1 * elapsed + 2 * 0.02  # first and last on top


def test_a_large_run_collapses_and_shows_few_frames():
    screen = Screen()
    inc = fd.op(lambda x: x + 1, name="inc")
    firsts = [inc(i) for i in range(2500)]
    total = fd.op(sum, name="total")([inc(x) for x in firsts])
    res = fd.run(total, executor="sync", callbacks=[LiveGraph(screen)])
    assert res.ok and len(res) == 5001
    last = screen.frames[-1].dot.source
    assert "inc ×2500" in last and last.count("->") < 10
    assert len(screen.frames) <= 2 + 10  # the run takes well under two seconds


def test_an_interrupted_run_leaves_no_drawing_thread_behind():
    screen = Screen()

    @fd.op
    def stop(x):
        raise KeyboardInterrupt

    inc = fd.op(lambda x: x + 1, name="inc")
    with pytest.raises(KeyboardInterrupt):
        fd.run(stop(inc(1)), executor="sync", callbacks=[LiveGraph(screen, interval=0.01)])
    for thread in [t for t in threading.enumerate() if t.name == "flowdispatch-live"]:
        thread.join(timeout=WAIT)  # it draws what changed, then ends by itself
        assert not thread.is_alive()
    assert not any(frame.final for frame in screen.frames)


# -- where it shows ------------------------------------------------------------------------
def test_in_a_notebook_it_displays_once_then_updates_that_display(monkeypatch):
    shown: list[tuple[Frame, object]] = []
    screen = Screen()

    def display(obj, display_id=None):
        shown.append((obj, display_id))
        return screen

    monkeypatch.setattr(live, "_notebook_display", lambda: display)
    inc = fd.op(lambda x: x + 1, name="inc")
    assert fd.compute(inc(inc(1)), executor="sync", progress="graph") == (3,)
    assert len(shown) == 1 and shown[0][1] is True
    assert set(shown[0][0].states.values()) == {"pending"}
    assert screen.frames[-1].final and set(screen.frames[-1].states.values()) == {"done"}


def test_outside_a_notebook_progress_graph_shows_a_progress_bar(capsys):
    assert live._notebook_display() is None  # pytest is no IPython kernel
    inc = fd.op(lambda x: x + 1, name="inc")
    res = fd.run(inc(inc(1)), executor="sync", progress="graph")
    assert res.ok
    assert fd.compute(inc(inc(1)), executor="threads", progress="graph") == (3,)
    assert re.search(r"2/2 .*node", capsys.readouterr().err)


def test_progress_accepts_false_true_and_graph_only(capsys):
    inc = fd.op(lambda x: x + 1, name="inc")
    assert fd.compute(inc(1), executor="sync", progress=True) == (2,)
    assert "1/1" in capsys.readouterr().err
    assert fd.compute(inc(1), executor="sync", progress=False) == (2,)
    with pytest.raises(ValueError, match=r"progress: expected False, True .* or 'graph' .* "
                                         r"got 'bar'"):
        fd.compute(inc(1), executor="sync", progress="bar")


def test_a_failing_display_stops_the_drawing_not_the_run(caplog):
    class Broken:
        def update(self, frame):
            raise OSError("the front end went away")

    inc = fd.op(lambda x: x + 1, name="inc")
    with caplog.at_level(logging.WARNING, logger="flowdispatch"):
        res = fd.run(inc(inc(1)), executor="sync", callbacks=[LiveGraph(Broken())])
    assert res.ok
    assert "the live graph stopped" in caplog.text and "front end went away" in caplog.text


def test_bad_options_fail_when_made():
    with pytest.raises(ValueError, match="interval: expected seconds >= 0, got -1"):
        LiveGraph(interval=-1)
    with pytest.raises(TypeError, match=r"handle: expected an object with an update\(frame\)"):
        LiveGraph(handle=object())
    with pytest.raises(ValueError, match="rankdir: expected one of TB, LR, BT, RL, got 'up'"):
        LiveGraph(rankdir="up")
    with pytest.raises(TypeError, match="collapse: expected a node count"):
        LiveGraph(collapse=-3)


@needs_dot
def test_a_frame_shows_as_svg_and_the_last_one_as_the_results_do():
    screen = Screen()
    inc = fd.op(lambda x: x + 1, name="inc")
    fd.run(inc(inc(1)), executor="sync", callbacks=[LiveGraph(screen, rankdir="LR")])
    first = screen.frames[0]._repr_mimebundle_()
    assert first["image/svg+xml"].lstrip().startswith("<?xml")
    assert "<svg" in first["image/svg+xml"]
    assert "image/png" not in first and "text/html" not in first  # not kept: no need
    png = screen.frames[0]._repr_mimebundle_(include=["image/png"])["image/png"]
    assert base64.b64decode(png).startswith(b"\x89PNG")
    assert first["text/plain"] == "<LiveGraph frame: 2 pending>"
    last = screen.frames[-1]._repr_mimebundle_()
    assert '<img src="data:image/png;base64,' in last["text/html"]
    assert screen.frames[-1]._repr_mimebundle_()["text/plain"] == "<Results: 2 done>"
    assert "rankdir=LR" in screen.frames[0].dot.source


@needs_dot
def test_the_drawing_grows_as_nodes_expand():
    screen = Screen()
    listing = fd.op(lambda n: list(range(n)), name="listing")

    def shown(states: dict[str, str]) -> bool:  # a frame with the nodes that joined
        return any(key.startswith("slow-") for key in states)

    slow = fd.op(lambda x: screen.wait_for(shown) and x, name="slow")  # waits for that frame
    mapped = slow.map(listing(3))
    res = fd.run(mapped, executor="sync", callbacks=[LiveGraph(screen, interval=0.0)])
    assert res[mapped] == [0, 1, 2]
    children = res.children(mapped)
    grown = [f for f in screen.frames if not f.final and shown(f.states)]
    assert grown[0].states[children[0].key] in ("pending", "running")
    edge = f'"{children[0].key}" -> "{mapped.key}" [arrowhead=onormal style=dashed]'
    assert edge in grown[0].dot.source
    assert screen.frames[-1].states == res.states and screen.frames[-1].final
