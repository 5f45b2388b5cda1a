"""The error tree: one root, and each error also a fitting builtin."""

import concurrent.futures
import pickle
import re

import pytest

import flowdispatch as fd
from flowdispatch import errors


@pytest.mark.parametrize("cls, bases", [
    (fd.FlowDispatchError, (Exception,)),
    (fd.GraphError, (fd.FlowDispatchError, ValueError)),
    (fd.CycleError, (fd.GraphError, ValueError)),
    (fd.NotAllowedError, (fd.GraphError, ValueError)),
    (fd.UpstreamError, (fd.FlowDispatchError, RuntimeError)),
    (fd.CancelledError, (fd.FlowDispatchError, concurrent.futures.CancelledError)),
    (fd.OpTimeoutError, (fd.FlowDispatchError, TimeoutError)),
    (fd.NoutError, (fd.FlowDispatchError, ValueError)),
    (fd.ExecutorError, (fd.FlowDispatchError, RuntimeError)),
    (fd.UnknownExecutorError, (fd.ExecutorError, LookupError)),
    (fd.SerializationError, (fd.FlowDispatchError, TypeError)),
    (fd.CacheError, (fd.FlowDispatchError, ValueError)),
])
def test_each_error_subclasses_its_documented_bases(cls, bases):
    assert all(issubclass(cls, base) for base in bases)


def test_every_error_is_exported():
    assert sorted(errors.__all__) == [
        "CacheError", "CacheWarning", "CancelledError", "CycleError", "DotNotFoundError", "ExecutorError",
        "FlowDispatchError", "GraphError", "NotAllowedError", "NoutError", "OpTimeoutError",
        "SecurityWarning", "SerializationError",
        "UnknownExecutorError", "UpstreamError"]
    assert all(getattr(fd, name) is getattr(errors, name) for name in errors.__all__)
    warnings = [name for name in errors.__all__ if name.endswith("Warning")]
    assert warnings == ["CacheWarning", "SecurityWarning"]
    assert all(issubclass(getattr(errors, name), UserWarning) for name in warnings)
    assert all(issubclass(getattr(errors, name), fd.FlowDispatchError)
               for name in errors.__all__ if name not in warnings)


def test_the_tree_is_drawn_in_the_docstring():
    for name in errors.__all__:
        assert name in errors.__doc__


def test_cycle_error():
    err = fd.CycleError(["a-1", "b-2", "c-3"])
    assert err.cycle == ("a-1", "b-2", "c-3")
    assert str(err) == ("the graph has a cycle: a-1 -> b-2 -> c-3 -> a-1. A flowdispatch graph "
                        "must be acyclic: remove one of these edges.")
    assert "cycle: ?." in str(fd.CycleError([]))


def test_upstream_error():
    cause = OSError("disk")
    err = fd.UpstreamError("report-1", "load-2", cause)
    assert (err.key, err.upstream, err.error) == ("report-1", "load-2", cause)
    assert str(err) == ("node 'report-1' did not run: its upstream node 'load-2' failed with "
                        "OSError: disk")
    assert str(fd.UpstreamError("a", "b")) == "node 'a' did not run: its upstream node 'b' failed"


@pytest.mark.parametrize("err", [
    fd.CycleError(["a", "b"]),
    fd.NotAllowedError(["os:system"]),
    fd.UpstreamError("a", "b", ValueError("v")),
    fd.GraphError("bad graph"),
    fd.SerializationError("cannot pickle"),
    fd.UnknownExecutorError("unknown"),
    fd.OpTimeoutError("too slow"),
])
def test_errors_pickle(err):
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is type(err)
    assert str(again) == str(err)


def test_pickled_errors_keep_their_fields():
    again = pickle.loads(pickle.dumps(fd.UpstreamError("a", "b", ValueError("v"))))
    assert (again.key, again.upstream, str(again.error)) == ("a", "b", "v")
    assert pickle.loads(pickle.dumps(fd.CycleError(["x", "y"]))).cycle == ("x", "y")
    assert pickle.loads(pickle.dumps(fd.NotAllowedError(["m:f"]))).names == ("m:f",)


def test_a_timeout_is_caught_as_a_builtin_timeout():
    with pytest.raises(TimeoutError):
        raise fd.OpTimeoutError("node 'slow-1' ran longer than 5 s")


class TwoArgError(Exception):
    """An exception that pickles but does not unpickle: its args do not fit its __init__."""

    def __init__(self, a, b):
        super().__init__(f"{a}/{b}")


@fd.op
def raises_two_arg_error(x):
    raise TwoArgError("bad", x)


@pytest.mark.parametrize("executor", ["processes", "dask"])
def test_an_exception_that_cannot_be_unpickled_keeps_its_type_message_traceback_and_node(
        executor, request):
    import traceback

    if executor == "dask":  # real worker processes (see conftest.py)
        pytest.importorskip("distributed")
        executor = request.getfixturevalue("dask_executor")
    node = raises_two_arg_error("input")
    error = fd.run(node, executor=executor).error(node)
    text = "".join(traceback.format_exception(error))
    assert isinstance(error, fd.SerializationError)  # a stand-in that names the type
    assert re.search(r"(\w+\.)*TwoArgError: bad/input", text)
    assert f"flowdispatch: raised by node {node.key!r}" in text
    assert "in raises_two_arg_error" in text  # the remote traceback
    with pytest.raises(fd.SerializationError, match=r"TwoArgError: bad/input \(the exception"):
        fd.compute(raises_two_arg_error("input"), executor=executor)
