"""Graphs as JSON: the round trip, and loading only what the caller allows."""

from __future__ import annotations

import json
import sys

import pytest

import flowdispatch as fd


@fd.op
def double(x):
    return 2 * x


class Flaky(Exception):
    pass


@fd.op(retries=2, retry_on=(ConnectionError, Flaky))
def fetch(x):
    return x


def test_a_graph_of_flowdispatchs_own_helpers_and_builtins_loads_without_allow():
    a, b = fd.value(3), fd.value(4)
    total = fd.op(sum)(fd.collect([a + b, -a, (a * b) // 2, fd.value([5, 6])[1]]))
    g = fd.Graph(total)
    again = fd.Graph.from_json(g.to_json())
    assert again == g
    assert fd.compute(again.targets[0], executor="sync") == (7 - 3 + 6 + 6,)


@pytest.mark.parametrize("allow", [[__name__], [f"{__name__}."], [f"{__name__}:double"]])
def test_the_callers_own_ops_load_when_allowed(allow):
    g = fd.Graph(double(double(2)))
    assert fd.Graph.from_json(g.to_json(), allow=allow) == g
    assert fd.compute(fd.Graph.from_json(g.to_json(), allow=allow).targets[0],
                      executor="sync") == (8,)
    with pytest.raises(fd.NotAllowedError, match=rf"not allowed: '{__name__}:double'\. "
                                                 r"Loading a graph imports"):
        fd.Graph.from_json(g.to_json())


def test_nothing_is_imported_before_every_name_is_allowed(tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    (tmp_path / "planted_ops.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n"
        "import flowdispatch as fd\n"
        "@fd.op\n"
        "def double(x):\n"
        "    return 2 * x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    text = fd.Graph(double(double(2))).to_json()
    text = text.replace(f"{__name__}:double", "planted_ops:double", 1)
    with pytest.raises(fd.NotAllowedError) as info:
        fd.Graph.from_json(text)
    assert info.value.names == ("planted_ops:double", f"{__name__}:double")
    with pytest.raises(fd.NotAllowedError, match=r"not allowed: 'planted_ops:double'\. "):
        fd.Graph.from_json(text, allow=[__name__])
    assert "planted_ops" not in sys.modules and not marker.exists()
    try:
        g = fd.Graph.from_json(text, allow=[__name__, "planted_ops"])
        assert marker.exists() and fd.compute(g.targets[0], executor="sync") == (8,)
    finally:
        sys.modules.pop("planted_ops", None)


def test_a_graph_that_would_call_os_system_is_refused(tmp_path):
    flag = tmp_path / "flag"
    text = fd.Graph(double(f"touch {flag}")).to_json().replace(f"{__name__}:double", "os:system")
    with pytest.raises(fd.NotAllowedError, match=r"not allowed: 'os:system'\..*Never run a "
                                                 r"graph from a source you do not trust"):
        fd.Graph.from_json(text)
    with pytest.raises(fd.GraphError, match=r"'os:system' is not where its object is defined "
                                            r"\('posix:system'\)"):
        fd.Graph.from_json(text, allow=["os."])  # an allowed module cannot hand out imports
    assert not flag.exists()


def test_an_allowed_module_cannot_hand_out_what_it_imported():
    text = fd.Graph(double(1)).to_json().replace(f"{__name__}:double", f"{__name__}:fd.compute")
    with pytest.raises(fd.GraphError, match=rf"'{__name__}:fd.compute' is not where its object "
                                            r"is defined \('flowdispatch.api:compute'\)"):
        fd.Graph.from_json(text, allow=[__name__])


def test_retry_on_names_are_checked_too():
    g = fd.Graph(fetch(1))
    text = g.to_json()
    with pytest.raises(fd.NotAllowedError) as info:
        fd.Graph.from_json(text, allow=[f"{__name__}:fetch"])
    assert info.value.names == (f"{__name__}:Flaky",)  # builtins:ConnectionError is allowed
    again = fd.Graph.from_json(text, allow=[f"{__name__}:fetch", f"{__name__}:Flaky"])
    assert again == g and again.targets[0].op.settings.retry_on == (ConnectionError, Flaky)


def test_attribute_and_method_nodes_need_their_helpers_allowed():
    text = fd.Graph(fd.value("a-b").upper().split("-")).to_json()
    with pytest.raises(fd.NotAllowedError, match=r"not allowed: 'flowdispatch.core.node:"
                                                 r"_call_method'\."):
        fd.Graph.from_json(text)
    g = fd.Graph.from_json(text, allow=["flowdispatch.core.node:_call_method"])
    assert fd.compute(g.targets[0], executor="sync") == (["A", "B"],)


@pytest.mark.parametrize("path", ["os.system", 42, "os:", ":system", "os:sys tem", "../x:y"])
def test_a_name_that_is_not_an_import_path_is_refused(path):
    data = json.loads(fd.Graph(double(1)).to_json())
    data["nodes"][-1]["fn"] = path
    with pytest.raises(fd.GraphError, match=r"expected an import path 'module:qualname' in "
                                            rf"the JSON, got {path!r}"):
        fd.Graph.from_json(json.dumps(data), allow=[__name__])


def test_malformed_records_are_refused():
    with pytest.raises(fd.GraphError, match=r"expected a list of node records with string keys"):
        fd.Graph.from_json(json.dumps({"format": "flowdispatch.core.graph/1", "nodes": [3]}))
    data = json.loads(fd.Graph(double(1)).to_json())
    data["nodes"][-1]["args"] = [{"x": 1}]
    with pytest.raises(fd.GraphError, match=r"expected a tagged object \('__node__', "
                                            r"'__tuple__', '__set__' or '__dict__'\) in the "
                                            r"JSON of Graph.to_json, got \{'x': 1\}"):
        fd.Graph.from_json(json.dumps(data), allow=[__name__])
