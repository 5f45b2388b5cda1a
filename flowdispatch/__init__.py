"""flowdispatch: write a workflow as plain decorated functions, run it anywhere.

Calls of ``@op`` functions build lazy nodes; the nodes form a networkx DAG
that renders with graphviz and runs on one thread, a pool, or a dask cluster.

Examples
--------
>>> import flowdispatch as fd
>>> @fd.op
... def inc(x):
...     return x + 1
>>> fd.compute(inc(inc(1)), executor="sync")
(3,)
"""

from typing import TYPE_CHECKING, Any

from . import config
from .api import compute, persist, run, submit
from .core.callbacks import Callback
from .core.graph import Graph
from .core.node import Node, collect, value
from .core.op import Op, OpSettings, op, unmapped
from .core.results import Results, State
from .errors import (
    CacheError,
    CacheWarning,
    CancelledError,
    CycleError,
    DotNotFoundError,
    ExecutorError,
    FlowDispatchError,
    GraphError,
    NotAllowedError,
    NoutError,
    OpTimeoutError,
    SecurityWarning,
    SerializationError,
    UnknownExecutorError,
    UpstreamError,
)
from .executors import (
    Executor,
    PoolExecutor,
    ProcessExecutor,
    SubmitExecutor,
    SyncExecutor,
    ThreadExecutor,
    register_executor,
)
from .view.progress import ProgressBar
from .view.render import visualize

if TYPE_CHECKING:  # imported on first use (see __getattr__); checkers see it here
    from .executors.dask.client import DaskExecutor

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # The dask executor imports distributed, which `import flowdispatch` must not.
    if name == "DaskExecutor":
        from .executors.dask.client import DaskExecutor

        return DaskExecutor
    raise AttributeError(f"module 'flowdispatch' has no attribute {name!r}")

__all__ = [
    "CacheError",
    "CacheWarning",
    "Callback",
    "CancelledError",
    "CycleError",
    "DaskExecutor",
    "DotNotFoundError",
    "Executor",
    "ExecutorError",
    "FlowDispatchError",
    "Graph",
    "GraphError",
    "Node",
    "NotAllowedError",
    "NoutError",
    "Op",
    "OpSettings",
    "OpTimeoutError",
    "PoolExecutor",
    "ProcessExecutor",
    "ProgressBar",
    "Results",
    "SecurityWarning",
    "SerializationError",
    "State",
    "SubmitExecutor",
    "SyncExecutor",
    "ThreadExecutor",
    "UnknownExecutorError",
    "UpstreamError",
    "collect",
    "compute",
    "config",
    "op",
    "persist",
    "register_executor",
    "run",
    "submit",
    "unmapped",
    "value",
    "visualize",
]
