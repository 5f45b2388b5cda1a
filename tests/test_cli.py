"""The flowdispatch command, run as a user runs it: in a subprocess."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import flowdispatch

ROOT = Path(flowdispatch.__file__).resolve().parents[1]

FLOWS = textwrap.dedent(
    """
    import flowdispatch as fd

    @fd.op
    def inc(x):
        return x + 1

    @fd.op
    def boom(x):
        raise ValueError(f"bad {x}")

    calls = []

    @fd.op(retries=1)
    def flaky(x):
        calls.append(x)
        if len(calls) == 1:
            raise ConnectionError("first call fails")
        return x * 2

    total = inc(inc(1))
    both = {"a": inc(1), "b": [inc(2), 7]}
    broken = inc(boom(1))
    retried = flaky(21)
    NUMBER = 3

    def pipeline():
        return inc(10)

    def needs(x):
        return inc(x)
    """
)


@pytest.fixture
def flows(tmp_path):
    (tmp_path / "flows.py").write_text(FLOWS)
    (tmp_path / "broken_mod.py").write_text("raise RuntimeError('import-time failure')\n")
    return tmp_path


def cli(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("DASK_FLOWDISPATCH__EXECUTOR", None)
    return subprocess.run(
        [sys.executable, "-m", "flowdispatch", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )


# -- run ------------------------------------------------------------------------------------
def test_run_prints_the_value(flows):
    done = cli("run", "flows:total", "--executor", "sync", cwd=flows)
    assert (done.returncode, done.stdout, done.stderr) == (0, "3\n", "")


def test_run_rebuilds_containers_of_nodes(flows):
    done = cli("run", "flows:both", "-e", "sync", cwd=flows)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "{'a': 2, 'b': [3, 7]}\n"


def test_run_calls_a_function_without_arguments(flows):
    done = cli("run", "flows:pipeline", "-e", "sync", cwd=flows)
    assert (done.returncode, done.stdout) == (0, "11\n")


def test_run_takes_a_path_to_a_file(flows, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    done = cli("run", str(flows / "flows.py") + ":total", "-e", "sync", cwd=elsewhere)
    assert (done.returncode, done.stdout) == (0, "3\n")


@pytest.mark.parametrize("executor", ["threads", "processes"])
def test_run_on_local_pools(flows, executor):
    done = cli("run", "flows:both", "-e", executor, cwd=flows)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "{'a': 2, 'b': [3, 7]}\n"


def test_run_progress_bar_goes_to_stderr(flows):
    done = cli("run", "flows:both", "-e", "sync", "--progress", cwd=flows)
    assert (done.returncode, done.stdout) == (0, "{'a': 2, 'b': [3, 7]}\n")
    assert "2/2" in done.stderr


@pytest.mark.slow
def test_run_on_an_embedded_dask_cluster(flows):
    done = cli("run", "flows:both", "-e", "dask", cwd=flows)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "{'a': 2, 'b': [3, 7]}\n"


@pytest.mark.slow
def test_run_with_no_scheduler_at_the_address_exits_1(flows):
    done = cli("run", "flows:total", "-e", "tcp://127.0.0.1:9", cwd=flows)
    assert done.returncode == 1
    assert re.search(r"^flowdispatch run: error: .*'tcp://127\.0\.0\.1:9'", done.stderr, re.M)
    assert "Traceback" not in done.stderr


def test_run_json_summarises_every_node(flows):
    done = cli("run", "flows:total", "-e", "sync", "--json", cwd=flows)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["ok"] is True
    assert out["executor"] == "sync"
    assert out["counts"] == {"done": 2}
    assert out["value"] == 3
    assert [n["name"] for n in out["nodes"]] == ["inc", "inc"]
    assert [n["state"] for n in out["nodes"]] == ["done", "done"]
    assert [n["attempts"] for n in out["nodes"]] == [1, 1]
    assert [n["error"] for n in out["nodes"]] == [None, None]
    assert all(isinstance(n["duration"], float) and n["duration"] >= 0 for n in out["nodes"])
    assert out["targets"] == [out["nodes"][-1]["key"]]
    assert all(re.fullmatch(r"inc-\w+", n["key"]) for n in out["nodes"])


def test_run_json_counts_retries(flows):
    done = cli("run", "flows:retried", "-e", "sync", "--json", cwd=flows)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["value"] == 42
    assert [(n["name"], n["state"], n["attempts"]) for n in out["nodes"]] == [("flaky", "done", 2)]


def test_run_failure_exits_1_and_names_the_node(flows):
    done = cli("run", "flows:broken", "-e", "sync", cwd=flows)
    assert done.returncode == 1
    assert done.stdout == ""
    assert re.search(r"^error: node 'boom-\w+' failed:$", done.stderr, re.M)
    assert re.search(r"^ValueError: bad 1$", done.stderr, re.M)
    assert re.search(r"2 nodes: 1 failed, 1 did not run because an upstream node failed",
                     done.stderr)


def test_run_json_failure_reports_states_and_upstream(flows):
    done = cli("run", "flows:broken", "-e", "sync", "--json", cwd=flows)
    assert done.returncode == 1
    out = json.loads(done.stdout)
    assert out["ok"] is False
    assert "value" not in out
    assert out["counts"] == {"failed": 1, "upstream_failed": 1}
    boom, inc = out["nodes"]
    assert (boom["name"], boom["state"], boom["error"]) == ("boom", "failed", "ValueError: bad 1")
    assert (inc["name"], inc["state"], inc["upstream"]) == ("inc", "upstream_failed", boom["key"])
    assert inc["duration"] is None and inc["attempts"] == 0
    assert re.match(r"UpstreamError: node 'inc-\w+' did not run", inc["error"])
    assert f"error: node {boom['key']!r} failed:" in done.stderr


# -- usage errors: exit 2, message says expected / got / what to do --------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "flows"],
         r"flowdispatch run: error: expected MODULE:ATTR, such as 'mypkg.flows:report'.*got 'flows'"),
        (["run", "nomod:total"],
         r"cannot import module 'nomod' \(No module named 'nomod'\); expected an importable "
         r"module.*run from the folder that contains it"),
        (["run", "missing.py:total"], r"no such file 'missing.py'; expected a path to a \.py file"),
        (["run", "flows:nothing"],
         r"module 'flows' has no attribute 'nothing'; it has \[.*\]; expected the name of a "
         r"node, a list/dict of nodes, or a function that returns them"),
        (["run", "flows:NUMBER"],
         r"flows:NUMBER is int 3; expected a node, a list/tuple/dict of nodes, or a function "
         r"without required arguments"),
        (["run", "flows:needs"],
         r"flows:needs is a function that needs arguments; expected one callable without arguments"),
        (["run", "flows:total", "-e", "warp-drive"],
         r"unknown executor 'warp-drive'; expected one of \[.*'sync'.*\]"),
        (["show", "flows:total", "-o", "graph.txt"],
         r"-o 'graph.txt': expected a file name ending in one of"),
        (["run"], r"the following arguments are required: MODULE:ATTR"),
        ([], r"the following arguments are required: COMMAND"),
        (["fly"], r"invalid choice: 'fly'"),
    ],
)
def test_usage_errors_exit_2(flows, args, message):
    done = cli(*args, cwd=flows)
    assert done.returncode == 2, done.stderr
    assert re.search(message, done.stderr), done.stderr
    assert "Traceback" not in done.stderr


def test_missing_attribute_lists_the_candidates(flows):
    done = cli("run", "flows:nothing", cwd=flows)
    listed = re.search(r"it has (\[.*?\])", done.stderr).group(1)
    assert listed == str(["boom", "both", "broken", "flaky", "inc", "needs", "pipeline",
                          "retried", "total"])


def test_an_import_that_raises_exits_1_with_its_traceback(flows):
    done = cli("run", "broken_mod:x", cwd=flows)
    assert done.returncode == 1
    assert "flowdispatch run: error: importing module 'broken_mod' failed:" in done.stderr
    assert re.search(r"^RuntimeError: import-time failure$", done.stderr, re.M)


# -- show and demo -----------------------------------------------------------------------------
def test_show_writes_svg(flows):
    done = cli("show", "flows:total", "-o", "graph.svg", cwd=flows)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "wrote graph.svg (2 nodes)\n"
    svg = (flows / "graph.svg").read_text()
    assert "<svg" in svg and "inc" in svg


def test_show_without_output_prints_dot(flows):
    done = cli("show", "flows:both", "--rankdir", "LR", cwd=flows)
    assert done.returncode == 0, done.stderr
    assert done.stdout.lstrip().startswith(("digraph", "strict digraph"))
    assert "rankdir=LR" in done.stdout


def test_demo_prints_the_report_and_writes_svgs(tmp_path):
    done = cli("demo", "--executor", "sync", "-o", "flow.svg", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "best region: west; rejected rows: 16" in done.stdout
    assert "total         44    199   1,485.36" in done.stdout
    for name in ("flow.svg", "flow-run.svg"):
        assert "<svg" in (tmp_path / name).read_text()


def test_demo_without_svg_writes_nothing(tmp_path):
    done = cli("demo", "-e", "sync", "--no-svg", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "best region: west" in done.stdout
    assert list(tmp_path.iterdir()) == []


def test_version():
    done = cli("--version", cwd=ROOT)
    assert (done.returncode, done.stdout) == (0, f"flowdispatch {flowdispatch.__version__}\n")


def test_the_command_does_not_import_distributed_for_local_executors(flows):
    code = (
        "import sys\n"
        "from flowdispatch.cli import main\n"
        "code = main(['run', 'flows:total', '-e', 'threads'])\n"
        "print(code, 'distributed' in sys.modules)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", code], cwd=flows, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.splitlines() == ["3", "0 False"], done.stderr


def test_cache_shows_and_clears_the_cached_values(tmp_path, monkeypatch):
    (tmp_path / "cached_flow.py").write_text(
        "import flowdispatch as fd\n"
        "@fd.op(cache=True)\n"
        "def square(x):\n"
        "    return x * x\n"
        "total = square(3)\n")
    folder = tmp_path / "the cache"
    monkeypatch.setenv("DASK_FLOWDISPATCH__CACHE_DIR", str(folder))
    assert cli("run", "cached_flow:total", cwd=tmp_path).stdout.strip() == "9"
    shown = cli("cache", cwd=tmp_path)
    assert shown.returncode == 0
    assert shown.stdout.startswith(f"{folder}: 1 entries (")
    cleared = cli("cache", "--clear", cwd=tmp_path)
    assert cleared.stdout.startswith("removed 1 entries (") and str(folder) in cleared.stdout
    assert cli("cache", cwd=tmp_path).stdout.startswith(f"{folder}: 0 entries (0.0 MB)")
