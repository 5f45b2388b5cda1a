"""The ``if __name__ == "__main__":`` guard: refusing a run that would start itself again.

Executors that start worker processes with ``spawn`` or ``forkserver`` (the
``processes`` executor, dask's embedded cluster) have each new process import
the user's script again, as ``__mp_main__``. A script that starts a run at
its top level, outside the guard, would then start it again in every worker,
which cannot start processes of its own while it is being imported: the
pool breaks, with dozens of tracebacks. This module notices that before
anything starts, and says what to do in one short error:

- in the script itself, by finding the top-level line of ``__main__`` that
  led to the run and checking, with :mod:`ast`, whether it lies under an
  ``if __name__ == "__main__":``;
- in a child process that is importing ``__main__`` (multiprocessing marks it
  as ``_inheriting``), whatever the parent could not see.

Examples
--------
>>> import flowdispatch as fd
>>> check_main_guard(fd.SyncExecutor())  # no processes: nothing to check
"""

from __future__ import annotations

import ast
import multiprocessing
import sys
from types import FrameType
from typing import Any

from .errors import ExecutorError

__all__ = ["check_main_guard"]

_FIX = ("Put what runs under the guard, so that the worker processes define the ops "
        "without running them:\n\n    if __name__ == \"__main__\":\n        fd.compute(...)")


def check_main_guard(executor: Any) -> None:
    """Raise :class:`~flowdispatch.ExecutorError` if a run on ``executor`` would start
    worker processes that import the script again and start the run again."""
    if not _spawns(executor):
        return
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise ExecutorError(
            f"a run on {executor!r} was started while a worker process was importing the "
            f"main script: the script starts it outside `if __name__ == \"__main__\":`.\n{_FIX}")
    line = _unguarded_line()
    if line is not None:
        raise ExecutorError(
            f"line {line} of the main script starts a run on {executor!r}, whose worker "
            f"processes import the script again, and it is not under "
            f"`if __name__ == \"__main__\":`.\n{_FIX}")


def _spawns(executor: Any) -> bool:
    """Whether ``executor`` starts processes that import ``__main__`` (not by fork)."""
    from .executors.local.pools import ProcessExecutor

    if isinstance(executor, ProcessExecutor):
        method = executor.mp_context or multiprocessing.get_start_method()
        return method != "fork"
    dask = sys.modules.get("flowdispatch.executors.dask")  # not imported: not in use
    if dask is not None and isinstance(executor, dask.DaskExecutor):
        return (executor.client is None and executor.address is None
                and executor.cluster_kwargs.get("processes", True) is not False)
    return False


def _unguarded_line() -> int | None:
    """The top-level line of the main script that led here, if it is not under the guard."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or not path:
        return None  # an interactive session or a notebook: nothing is imported again
    frame: FrameType | None = sys._getframe(1)
    line: int | None = None
    while frame is not None:
        if frame.f_globals is main.__dict__ and frame.f_code.co_name == "<module>":
            line = frame.f_lineno
        frame = frame.f_back
    if line is None:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            tree = ast.parse(handle.read())
    except (OSError, SyntaxError, ValueError):
        return None
    for node in ast.walk(tree):
        if (isinstance(node, ast.If) and _is_main_test(node.test)
                and node.lineno <= line <= (node.end_lineno or node.lineno)):
            return None
    return line


def _is_main_test(test: ast.expr) -> bool:
    """Whether ``test`` compares ``__name__`` with ``"__main__"`` (either way round)."""
    names = {n.id for n in ast.walk(test) if isinstance(n, ast.Name)}
    texts = {n.value for n in ast.walk(test) if isinstance(n, ast.Constant)}
    return "__name__" in names and "__main__" in texts
