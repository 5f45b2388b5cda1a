"""Local executors: in the calling thread, on a thread pool, on a process pool.

``pools`` holds the executors (each a :class:`~flowdispatch.SubmitExecutor`
on the shared scheduling loop); ``worker`` what runs in a pool's worker
process.
"""
from .pools import PoolExecutor, ProcessExecutor, SyncExecutor, ThreadExecutor

__all__ = ["PoolExecutor", "ProcessExecutor", "SyncExecutor", "ThreadExecutor"]
