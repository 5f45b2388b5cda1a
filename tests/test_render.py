"""Tests for flowdispatch.render: DOT text, state colours, collapsing, files, escaping."""

from __future__ import annotations

import base64
import html
import re
import shutil

import graphviz
import pytest

import flowdispatch as fd
from flowdispatch.view.render import (
    FORMATS,
    STATE_COLORS,
    DotNotFoundError,
    results_html,
    visualize,
)
from flowdispatch.core.results import STATES, Results

needs_dot = pytest.mark.skipif(shutil.which("dot") is None,
                               reason="Graphviz's dot is not installed")


# -- helpers ---------------------------------------------------------------------------
def node_line(dot: graphviz.Digraph, key: str) -> str:
    """The DOT statement of the node with id ``key``."""
    prefix = f'\t"{key}" ['
    found = [line for line in dot.source.splitlines() if line.startswith(prefix)]
    assert len(found) == 1, f"{key!r} is drawn {len(found)} times"
    return found[0]


def node_ids(dot: graphviz.Digraph) -> list[str]:
    """The ids of the drawn nodes, legend excluded."""
    ids = re.findall(r'^\t"([^"]+)" \[', dot.source, flags=re.M)
    return [i for i in ids if not i.startswith("legend ")]


def edges(dot: graphviz.Digraph) -> list[tuple[str, str]]:
    return [e for e in re.findall(r'^\t"([^"]+)" -> "([^"]+)"$', dot.source, flags=re.M)
            if not e[0].startswith("legend ")]


def attr(line: str, name: str) -> str | None:
    found = re.search(rf'\b{name}=("(?:[^"\\]|\\.)*"|<.*>(?= \w+=|\]$)|[^ \]]+)', line)
    return None if found is None else found.group(1).strip('"')


def svg_text(svg: str) -> str:
    """Visible text and tooltips of an SVG, unescaped, zero-width spaces dropped."""
    return html.unescape(svg).replace("\u200b", "")


@fd.op
def load(n):
    return list(range(n))


@fd.op
def add(x, y=1):
    return x + y


@fd.op
def half(x):
    if x % 2:
        raise ValueError(f"{x} is odd")
    return x // 2


@fd.op
def inc(x):
    if x % 100 == 7:
        raise ValueError(f"{x} is unlucky")
    return x + 1


@fd.op
def total(xs):
    return sum(xs)


# -- shapes, labels, edges ---------------------------------------------------------------
def test_ops_are_boxes_and_data_nodes_ellipses_labelled():
    rows = fd.value([3, 1, 2], name="rows")
    n = add(load(4), y=3)
    dot = visualize(n, rows)
    line = node_line(dot, n.key)
    assert attr(line, "shape") == "box"
    assert "label=<add>" in line
    data = node_line(dot, rows.key)
    assert attr(data, "shape") == "ellipse"
    assert 'label=<rows<BR/><FONT POINT-SIZE="9" COLOR="#555555">[3, 1, 2]</FONT>>' in data


def test_edges_follow_data_by_key():
    a = load(3)
    b = add(a, 1)
    c = add(a, b)
    dot = visualize(c)
    assert sorted(edges(dot)) == sorted([(a.key, b.key), (a.key, c.key), (b.key, c.key)])
    assert sorted(node_ids(dot)) == sorted([a.key, b.key, c.key])


def test_literal_arguments_are_not_drawn_but_shown_in_the_tooltip():
    a = inc(1)
    n = add(a, y=3)
    dot = visualize(n)
    assert node_ids(dot) == [a.key, n.key]
    assert attr(node_line(dot, n.key), "tooltip") == "add(x=<inc-…>, y=3)"


def test_long_arguments_are_truncated_in_tooltip_and_label():
    big = fd.value(list(range(10_000)), name="big")
    n = add(big, y="x" * 1000)
    dot = visualize(n)
    tooltip = attr(node_line(dot, n.key), "tooltip")
    assert tooltip.startswith("add(x=<big-…>, y='xxx")
    assert len(tooltip) <= 200
    assert len(node_line(dot, big.key)) < 400


def test_helper_nodes_read_like_python():
    @fd.op(nout=2)
    def split(rows):
        return rows[::2], rows[1::2]

    text = fd.value("  Hi  ", name="text")
    first, _ = split(load(4))
    upper = text.upper()
    attribute = text.real
    both = fd.collect([first, upper])
    dot = visualize(both, attribute)
    assert "label=<[0]>" in node_line(dot, first.key)
    assert attr(node_line(dot, first.key), "tooltip") == "<split-…>[0]"
    assert "label=<.upper()>" in node_line(dot, upper.key)
    assert attr(node_line(dot, upper.key), "tooltip") == "<text-…>.upper()"
    assert "label=<.real>" in node_line(dot, attribute.key)
    assert "label=<collect (2)>" in node_line(dot, both.key)


def test_tags_are_shown_before_a_run():
    tagged = fd.op(lambda: 1, name="fetch", tags=("io",))
    n = tagged()
    assert "#io" in node_line(visualize(n), n.key)


def test_targets_have_a_thicker_border():
    a = load(3)
    b = add(a)
    dot = visualize(b)
    assert attr(node_line(dot, b.key), "penwidth") == "2.5"
    assert attr(node_line(dot, a.key), "penwidth") is None


def test_a_graph_and_its_nodes_draw_the_same():
    n = add(load(3))
    assert visualize(fd.Graph(n)).source == visualize(n).source
    assert fd.Graph(n).to_dot() == visualize(n).source
    assert n.visualize().source == visualize(n).source


def test_rankdir():
    assert "rankdir=LR" in visualize(load(1), rankdir="LR").source
    with pytest.raises(ValueError, match="rankdir: expected one of TB, LR, BT, RL, got 'XY'"):
        visualize(load(1), rankdir="XY")


def test_what_to_draw_is_checked():
    with pytest.raises(TypeError, match="got nothing"):
        visualize()
    with pytest.raises(TypeError, match="expected nodes"):
        visualize(42)
    n = load(1)
    with pytest.raises(TypeError, match="not a mix"):
        visualize(fd.Graph(n), n)
    with pytest.raises(ValueError, match="color='state' colours nodes by what happened in a run"):
        visualize(n, color="state")
    with pytest.raises(ValueError, match="color: expected None, 'state' or False, got 'op'"):
        visualize(n, color="op")
    with pytest.raises(TypeError, match="collapse: expected a node count >= 0"):
        visualize(n, collapse=-1)


# -- after a run ---------------------------------------------------------------------
def test_states_are_coloured_after_a_real_run():
    good, bad = half(4), half(3)
    after = add(bad, good)
    res = fd.run(after, good, executor="sync")
    assert res.counts == {"done": 1, "failed": 1, "upstream_failed": 1}
    dot = visualize(res)
    for node, state in ((good, "done"), (bad, "failed"), (after, "upstream_failed")):
        line = node_line(dot, node.key)
        assert (attr(line, "fillcolor"), attr(line, "color")) == STATE_COLORS[state]
    assert "dashed" in attr(node_line(dot, after.key), "style")
    # the same picture from Results.visualize and with color="state"
    assert res.visualize().source == dot.source
    assert visualize(res, color="state").source == dot.source


def test_durations_in_labels_and_errors_in_tooltips():
    good, bad = half(4), half(3)
    after = add(bad, good)
    res = fd.run(after, executor="sync")
    dot = visualize(res)
    assert re.search(r"\d+(\.\d)? (µs|ms|s)</FONT>", node_line(dot, good.key))
    failed = node_line(dot, bad.key)
    assert re.search(r">failed · \d+(\.\d)? (µs|ms|s)</FONT>", failed)
    assert attr(failed, "tooltip").endswith("\\nValueError: 3 is odd")
    upstream = attr(node_line(dot, after.key), "tooltip")
    assert upstream.endswith(f"did not run: upstream {bad.key} failed with ValueError: 3 is odd")
    assert "upstream failed</FONT>" in node_line(dot, after.key)


def test_skipped_nodes_after_overrides():
    a = half(3)
    b = add(a, 1)
    res = fd.run(b, executor="sync", overrides={a: 10})
    dot = visualize(res)
    assert attr(node_line(dot, a.key), "fillcolor") == STATE_COLORS["skipped"][0]
    assert attr(node_line(dot, b.key), "fillcolor") == STATE_COLORS["done"][0]


def test_every_state_has_its_own_colour_attempts_and_exact_durations():
    nodes = [add(i) for i in range(6)]
    graph = fd.Graph(*nodes)
    states = dict(zip([n.key for n in nodes], STATES))
    errors = {nodes[1].key: KeyError("nope")}
    durations = {nodes[0].key: 0.012, nodes[1].key: 2.5, nodes[3].key: 0.00004}
    attempts = {nodes[0].key: 1, nodes[1].key: 3}
    res = Results(graph, states, errors=errors, durations=durations, attempts=attempts)
    dot = visualize(res)
    fills = {attr(node_line(dot, n.key), "fillcolor") for n in nodes}
    assert len(fills) == 6
    assert ">12 ms</FONT>" in node_line(dot, nodes[0].key)
    assert ">failed · 2.5 s · 3 attempts</FONT>" in node_line(dot, nodes[1].key)
    assert "failed after 3 attempts (2.5 s)\\nKeyError: 'nope'" in node_line(dot, nodes[1].key)
    assert ">cached · 40 µs</FONT>" in node_line(dot, nodes[3].key)
    assert ">cancelled</FONT>" in node_line(dot, nodes[4].key)


def test_legend_lists_the_states_that_occur_with_counts():
    good, bad = half(4), half(3)
    res = fd.run(add(bad, good), half(8), executor="sync")
    dot = visualize(res)
    assert "subgraph cluster_legend {" in dot.source
    legend = [line for line in dot.source.splitlines() if line.startswith('\t\t"legend ')]
    labels = [re.search(r"label=<([^>]*)>", line).group(1) for line in legend if "->" not in line]
    assert labels == ["2 done", "1 failed", "1 upstream failed"]
    assert "legend cancelled" not in dot.source
    assert "cluster_legend" not in visualize(res, color=False).source
    assert "cluster_legend" not in visualize(fd.Graph(bad)).source


def test_no_colours_when_asked():
    res = fd.run(half(4), executor="sync")
    dot = visualize(res, color=False)
    assert STATE_COLORS["done"][0] not in dot.source


# -- collapsing ------------------------------------------------------------------------
@fd.op
def pick(rows, i):
    return rows[i % len(rows)]


def fan(width: int = 298):
    """A source, ``width`` picks from it, and their total: ``width + 2`` nodes."""
    source = load(3)
    picks = [pick(source, i) for i in range(width)]
    return source, picks, total(picks)


def test_collapse_a_fan_out_fan_in():
    source, incs, end = fan()
    assert len(fd.Graph(end)) == 300
    dot = visualize(end)
    ids = node_ids(dot)
    assert len(ids) == 3
    group = node_line(dot, ids[1])
    assert "label=<pick ×298>" in group
    assert attr(group, "peripheries") == "2"
    assert edges(dot) == [(source.key, ids[1]), (ids[1], end.key)]


def test_collapsed_groups_count_states_after_a_run():
    source = fd.value(0, name="zero")
    incs = [inc(add(source, i)) for i in range(298)]  # inc fails for 7, 107, 207
    end = total(incs)
    res = fd.run(end, executor="sync")
    assert res.counts == {"done": 594, "failed": 3, "upstream_failed": 1}
    dot = visualize(res)
    ids = node_ids(dot)
    assert len(ids) == 4
    adds, incs_group = node_line(dot, ids[1]), node_line(dot, ids[2])
    assert "label=<add ×298" in adds and ">298 done</FONT>" in adds
    assert "label=<inc ×298" in incs_group and ">295 done, 3 failed</FONT>" in incs_group
    assert attr(incs_group, "fillcolor") == STATE_COLORS["failed"][0]
    assert "ValueError: 7 is unlucky" in attr(incs_group, "tooltip")
    assert attr(node_line(dot, end.key), "fillcolor") == STATE_COLORS["upstream_failed"][0]
    assert len(edges(dot)) == 3


def test_collapse_threshold():
    _, _, end = fan()
    assert len(node_ids(visualize(end, collapse=False))) == 300
    assert len(node_ids(visualize(end, collapse=300))) == 300
    assert len(node_ids(visualize(end, collapse=299))) == 3
    _, _, small = fan(5)
    assert len(node_ids(visualize(small))) == 7
    assert len(node_ids(visualize(small, collapse=True))) == 3


def test_collapse_keeps_different_items_apart():
    @fd.op(nout=2)
    def split(rows):
        return rows[::2], rows[1::2]

    pairs = [split(load(i)) for i in range(60)]
    ends = [add(a, b) for a, b in pairs]
    dot = visualize(ends)
    labels = sorted(re.search(r"label=<([^<>]*)", node_line(dot, i)).group(1)
                    for i in node_ids(dot))
    assert labels == ["[0] ×60", "[1] ×60", "add ×60", "load ×60", "split ×60"]


def test_collapse_ten_thousand_nodes():
    layer = [fd.value(i, name="seed") for i in range(100)]
    for _ in range(99):
        layer = [add(x) for x in layer]
    end = total(layer)
    graph = fd.Graph(end)
    assert len(graph) == 10_001
    dot = visualize(graph)
    assert len(node_ids(dot)) == 101
    assert "label=<seed ×100>" in dot.source


# -- files and display -------------------------------------------------------------------
@needs_dot
@pytest.mark.parametrize(
    "fmt, check",
    [
        ("svg", lambda data: b"<svg" in data),
        ("png", lambda data: data.startswith(b"\x89PNG\r\n\x1a\n")),
        ("pdf", lambda data: data.startswith(b"%PDF")),
        ("dot", lambda data: data.startswith(b"digraph flowdispatch {")),
        ("gv", lambda data: data.startswith(b"digraph flowdispatch {")),
    ],
)
def test_write_a_file_in_each_format(tmp_path, fmt, check):
    res = fd.run(add(half(3), 1), executor="sync")
    out = tmp_path / f"graph.{fmt}"
    dot = visualize(res, filename=out)
    assert isinstance(dot, graphviz.Digraph)
    assert check(out.read_bytes())
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no stray source file


@needs_dot
def test_writing_an_image_leaves_files_next_to_it_alone(tmp_path):
    (tmp_path / "graph.gv").write_text("mine")
    visualize(load(1), filename=str(tmp_path / "graph.svg"))
    assert (tmp_path / "graph.gv").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["graph.gv", "graph.svg"]


@needs_dot
def test_format_overrides_the_extension(tmp_path):
    out = tmp_path / "graph.out"
    visualize(load(1), filename=out, format="SVG")
    assert b"<svg" in out.read_bytes()


def test_unknown_formats_name_the_supported_ones(tmp_path):
    assert FORMATS == ("dot", "gv", "pdf", "png", "svg")
    with pytest.raises(ValueError, match="unknown format 'bmp'; supported: dot, gv, pdf, png, svg"):
        visualize(load(1), filename=tmp_path / "graph.bmp")
    with pytest.raises(ValueError, match=r"unknown format 'jpg'; supported"):
        visualize(load(1), format="jpg")
    with pytest.raises(ValueError, match=r"cannot tell the format of .*graph': give it an ext"):
        visualize(load(1), filename=tmp_path / "graph")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_node_shows_the_first_words_of_its_error_under_its_name():
    bad = half(3)
    res = fd.run(add(bad), executor="sync")
    line = next(x for x in visualize(res).source.splitlines() if x.startswith(f'\t"{bad.key}"'))
    assert '<FONT POINT-SIZE="9" COLOR="#7A1A00">3 is odd</FONT>' in line
    long = fd.op(lambda: {}["a much longer key than fits"], name="look")()
    dot = visualize(fd.run(long, executor="sync"))
    assert ">'a much longer ke…</FONT>" in dot.source  # 18 characters at most


PNG = b"\x89PNG\r\n\x1a\n"


@needs_dot
def test_mimebundles_hold_svg_and_a_png_that_untrusted_notebooks_show():
    n = add(half(3))
    res = fd.run(n, executor="sync")
    for thing in (n, fd.Graph(n), res):
        bundle = thing._repr_mimebundle_()
        assert "<svg" in bundle["image/svg+xml"]
        if thing is res:  # the PNG is in the HTML, which untrusted notebooks show
            bundle = res._repr_mimebundle_(include=["image/png"])
        png = base64.b64decode(bundle["image/png"])
        assert png.startswith(PNG)
    assert list(n._repr_mimebundle_(include=["image/png"])) == ["image/png"]
    assert list(n._repr_mimebundle_(exclude=["image/png"])) == ["image/svg+xml"]


@needs_dot
def test_the_png_has_the_size_browsers_show_the_svg_at():
    dot = visualize(add(half(3)))
    svg = dot.pipe(format="svg", encoding="utf-8")
    points = float(re.search(r'<svg width="([\d.]+)pt"', svg).group(1))
    width = int.from_bytes(dot.png()[16:20], "big")  # the PNG's IHDR
    assert abs(width - points * 96 / 72) <= 2


@needs_dot
def test_the_results_html_holds_the_drawing_as_an_image_not_inline_svg():
    res = fd.run(add(half(3)), executor="sync")
    bundle = res._repr_mimebundle_()
    page = bundle["text/html"]
    assert "<svg" not in page and "ValueError: 3 is odd" in page
    img = re.search(r'<img src="data:image/png;base64,([^"]+)"', page).group(1)
    assert img == res._repr_mimebundle_(include=["image/png"])["image/png"]
    assert bundle["text/plain"] == repr(res)
    assert list(res._repr_mimebundle_(include=["text/html"])) == ["text/html", "text/plain"]


@needs_dot
def test_awkward_labels_render():
    weird = 'say "hi"\n<b>{x}</b> & C:\\new\\N \\'
    text = fd.value(weird, name="we<ird>")
    item = fd.value({"k": 1}, name="d")['a"b\\N<{']
    echo = fd.op(lambda s, t=None: s, name="echo")(text.upper(), t="\\N\\G\\")
    dot = visualize(echo, item)
    svg = svg_text(dot.pipe(format="svg", encoding="utf-8"))
    assert r"""we_ird = 'say "hi"\n<b>{x}</b> & C:\\new\\N \\'""" in svg  # tooltip: the repr
    assert r""">'say "hi"\…\new\\N \\'</text>""" in svg  # label: the repr, shortened
    assert r""">['a"b\\N<{']</text>""" in svg  # the index's repr, backslashes kept
    assert r"""t='\\N\\G\\'""" in svg  # \N is not replaced by the node's name


@needs_dot
def test_a_missing_dot_names_the_fix(tmp_path, monkeypatch):
    n = load(1)
    dot = visualize(n)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DotNotFoundError, match="apt-get install graphviz") as caught:
        visualize(n, filename=tmp_path / "graph.svg")
    assert isinstance(caught.value, graphviz.ExecutableNotFound)
    assert isinstance(caught.value, fd.FlowDispatchError)
    with pytest.raises(DotNotFoundError, match="filename='graph.dot'"):
        dot._repr_mimebundle_()
    visualize(n, filename=tmp_path / "graph.dot")  # DOT text needs no dot
    assert (tmp_path / "graph.dot").exists()


# -- HTML summary --------------------------------------------------------------------------
def test_results_html_counts_states_and_lists_failures():
    good, bad = half(4), half(3)
    @fd.op
    def shout():
        raise RuntimeError("<b>bold</b>")

    weird = shout()
    res = fd.run(add(bad, good), weird, executor="sync")
    page = results_html(res)
    assert page.startswith('<div class="flowdispatch-results">')
    assert "<strong>4 nodes</strong>" in page
    assert f"background:{STATE_COLORS['failed'][0]}" in page
    assert "failed</td><td" in page and "upstream failed</td><td" in page
    assert "ValueError: 3 is odd" in page
    assert "RuntimeError: &lt;b&gt;bold&lt;/b&gt;" in page
    assert "cancelled" not in page


@needs_dot
def test_results_html_can_hold_the_drawing(tmp_path, monkeypatch):
    res = fd.run(add(half(3)), executor="sync")
    assert "<svg" not in results_html(res)
    page = results_html(res, drawing=True)
    assert "<svg" not in page and page.endswith('style="max-width:100%"></div>')
    assert '<img src="data:image/png;base64,' in page
    monkeypatch.setenv("PATH", str(tmp_path))
    assert "apt-get install graphviz" in results_html(res, drawing=True)
    bundle = res._repr_mimebundle_()
    assert "apt-get install graphviz" in bundle["text/html"] and "image/png" not in bundle
