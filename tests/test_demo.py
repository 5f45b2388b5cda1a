"""The demo workflow: its exact result on every local executor, its graph, its SVGs."""

from __future__ import annotations

import pytest

import flowdispatch as fd
from flowdispatch import demo

EXPECTED = {
    "regions": {
        "north": {"orders": 11, "units": 51, "revenue": 35235},
        "south": {"orders": 11, "units": 51, "revenue": 38930},
        "east": {"orders": 10, "units": 44, "revenue": 28988},
        "west": {"orders": 12, "units": 53, "revenue": 45383},
    },
    "total_revenue": 148536,
    "total_units": 199,
    "best_region": "west",
    "rejected_rows": 16,
}


def test_main_returns_the_exact_report_and_writes_both_svgs(tmp_path, capsys):
    out = tmp_path / "demo.svg"
    assert demo.main(executor="sync", out=out) == EXPECTED
    for path in (out, tmp_path / "demo-run.svg"):
        assert path.exists()
        assert "<svg" in path.read_text()
    printed = capsys.readouterr().out
    assert "flowdispatch demo: 25 nodes, executor sync" in printed
    assert "west          12     53     453.83" in printed
    assert "total         44    199   1,485.36" in printed
    assert "best region: west; rejected rows: 16" in printed
    assert f"wrote {out}" in printed


def test_the_run_svg_is_coloured_by_state(tmp_path):
    demo.main(executor="sync", out=tmp_path / "flow.svg")
    plain = (tmp_path / "flow.svg").read_text()
    after = (tmp_path / "flow-run.svg").read_text()
    assert plain != after
    assert "report" in plain and "report" in after


def test_main_without_out_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert demo.main(executor="sync", out=None) == EXPECTED
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("executor", ["threads", "processes"])
def test_same_result_on_pools(executor):
    assert demo.main(executor=executor, out=None) == EXPECTED


def test_graph_fans_out_per_region_and_in_twice():
    target = demo.build()
    graph = fd.Graph(target)
    names = [node.name for node in graph]
    assert len(graph) == 25
    assert names.count("extract") == names.count("clean") == names.count("summarize") == 4
    assert names.count("price_list") == 1
    assert target.name == "report"
    totals, rejected = target.dependencies
    assert (totals.name, rejected.name) == ("combine", "count_rejected")
    assert len(rejected.dependencies) == 4  # fan-in from a plain list of nodes
    (summaries,) = totals.dependencies
    assert summaries.name == "summaries" and len(summaries.dependencies) == 4  # fd.collect


def test_build_is_lazy_and_fresh_each_time():
    assert demo.build().key != demo.build().key  # report is not pure: one node per call
    assert demo.build(regions=("east",)).compute(executor="sync")["regions"] == {
        "east": EXPECTED["regions"]["east"]
    }


def test_ops_are_callable_eagerly():
    valid, rejected = demo.clean.fn(demo.extract.fn("west", demo.PRICES))
    assert demo.summarize.fn("west", valid) == {"region": "west", **EXPECTED["regions"]["west"]}
    assert len(valid) + len(rejected) == 15


def test_format_report_matches_the_result():
    text = demo.format_report(EXPECTED)
    assert text.splitlines()[0].split() == ["region", "orders", "units", "revenue"]
    assert text.splitlines()[-1] == "best region: west; rejected rows: 16"
