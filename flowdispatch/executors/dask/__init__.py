"""The dask executor, split by where the code runs.

``client``: :class:`DaskExecutor` and the following of a run, in the user's
process. ``lower``: a graph as dask tasks, built on the client. ``worker``:
what a task does on a dask worker. Importing this package does not import
``distributed``; connecting does.
"""
from .client import DaskExecutor

__all__ = ["DaskExecutor"]
