"""The package surface: a sorted, importable __all__, and py.typed."""

from pathlib import Path

import flowdispatch as fd


def test_all_is_sorted_and_unique():
    assert fd.__all__ == sorted(fd.__all__)
    assert len(set(fd.__all__)) == len(fd.__all__)


def test_every_name_in_all_is_there():
    namespace: dict = {}
    exec("from flowdispatch import *", namespace)
    assert set(fd.__all__) <= set(namespace)
    assert all(getattr(fd, name) is namespace[name] for name in fd.__all__)


def test_all_names_the_public_api():
    expected = {
        "Callback", "CancelledError", "CycleError", "Executor", "ExecutorError",
        "FlowDispatchError", "Graph", "GraphError", "Node", "Op", "OpTimeoutError",
        "PoolExecutor", "ProcessExecutor", "ProgressBar", "Results", "SerializationError",
        "SyncExecutor", "ThreadExecutor", "UnknownExecutorError", "UpstreamError", "collect",
        "compute", "config", "op", "persist", "register_executor", "run", "submit", "unmapped",
        "value",
    }
    assert expected <= set(fd.__all__)
    assert not [name for name in fd.__all__ if name.startswith("_")]


def test_version():
    assert isinstance(fd.__version__, str)
    assert fd.__version__.count(".") >= 2


def test_py_typed_is_shipped():
    assert (Path(fd.__file__).parent / "py.typed").is_file()
