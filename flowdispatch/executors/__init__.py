"""Executors: where and how a graph runs."""
from .base import Executor
from .local.pools import PoolExecutor, ProcessExecutor, SyncExecutor, ThreadExecutor
from .registry import register_executor, resolve
from .submit import SubmitExecutor

__all__ = ["Executor", "PoolExecutor", "ProcessExecutor", "SubmitExecutor", "SyncExecutor",
           "ThreadExecutor", "register_executor", "resolve"]
