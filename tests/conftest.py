"""Shared fixtures: a real dask cluster (one scheduler, two workers) for the dask tests.

The cluster runs as separate processes, started with the ``dask scheduler`` and
``dask worker`` commands of this interpreter, bound to 127.0.0.1 on free ports.
It is started once per session, only if a test asks for it, and stopped at the
end: terminated, then killed after a bounded wait, so nothing is left running.
Every wait is bounded; nothing waits by sleeping a fixed time.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
N_WORKERS = 2


def wait_until(condition: Callable[[], object], timeout: float, what: str,
               interval: float = 0.02) -> object:
    """Poll ``condition`` until it is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def wait_for_workers_back(client, n: int = N_WORKERS, gone: Iterable[str] = (),
                          timeout: float = 60.0) -> None:
    """``n`` workers on the scheduler, none of them at an address in ``gone`` (a killed
    worker's: its nanny starts it again at another)."""
    def back() -> bool:
        workers = client.scheduler_info(n_workers=-1)["workers"]
        return len(workers) == n and not set(gone) & set(workers)
    wait_until(back, timeout, f"{n} workers")


def _die_with_parent() -> None:  # pragma: no cover - runs in the child, before exec
    """Linux: have the child terminated if the test process dies without cleaning up."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _dask_command(name: str) -> list[str]:
    script = Path(sys.executable).with_name("dask")
    if script.exists():
        return [str(script), name]
    return [sys.executable, "-m", f"distributed.cli.dask_{name}"]


def _environment() -> dict[str, str]:
    """Workers and scheduler import flowdispatch and the test modules (ops pickle by reference)."""
    env = dict(os.environ)
    paths = [str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env.pop("DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION", None)
    return env


class DaskProcesses:
    """A running scheduler and its workers; ``stop()`` ends them all."""

    def __init__(self, directory: Path, env: dict[str, str] | None = None,
                 n_workers: int = N_WORKERS, nthreads: int = 2):
        self.directory = directory
        self.env = env or {}  # more environment variables for every process
        self.n_workers = n_workers
        self.nthreads = nthreads
        self.scheduler_file = directory / "scheduler.json"
        self.processes: list[subprocess.Popen] = []
        self.address = ""

    def _spawn(self, args: list[str], log: str) -> subprocess.Popen:
        out = open(self.directory / log, "wb")  # noqa: SIM115 - closed by stop()
        kwargs = {"preexec_fn": _die_with_parent} if sys.platform.startswith("linux") else {}
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=self.directory,
                                   env={**_environment(), **self.env}, **kwargs)
        process.log = out  # type: ignore[attr-defined]
        self.processes.append(process)
        return process

    def start(self) -> None:
        scheduler = self._spawn(
            [*_dask_command("scheduler"), "--host", "127.0.0.1", "--port", "0",
             "--no-dashboard", "--scheduler-file", str(self.scheduler_file)],
            "scheduler.log")

        def address() -> str:
            if scheduler.poll() is not None:
                pytest.fail(f"dask scheduler exited with {scheduler.returncode}:\n{self.logs()}")
            with contextlib.suppress(OSError, ValueError, KeyError):
                return json.loads(self.scheduler_file.read_text())["address"]
            return ""

        self.address = wait_until(address, STARTUP_TIMEOUT, "the dask scheduler file")
        for i in range(self.n_workers):
            self._spawn(
                [*_dask_command("worker"), "--scheduler-file", str(self.scheduler_file),
                 "--host", "127.0.0.1", "--nthreads", str(self.nthreads), "--no-dashboard",
                 "--name", f"worker-{i}", "--death-timeout", "60",
                 "--local-directory", str(self.directory / f"worker-{i}")],
                f"worker-{i}.log")

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}"
                         for p in sorted(self.directory.glob("*.log")))

    def stop(self) -> None:
        """Terminate the workers, then the scheduler; kill what is left after a bounded wait."""
        from flowdispatch.testing import stop_process_trees

        workers, scheduler = self.processes[1:], self.processes[:1]
        for group in (workers, scheduler):  # workers first: they say goodbye to the scheduler
            stop_process_trees(group, STOP_TIMEOUT)
        for process in self.processes:
            process.log.close()


@pytest.fixture(autouse=True)
def _registry_restored() -> Iterator[None]:
    """Executor names registered by a test are gone after it, so that no test sees
    names another registered (the order of tests does not matter)."""
    from flowdispatch.executors import registry

    saved = dict(registry._factories)
    yield
    registry._factories.clear()
    registry._factories.update(saved)


@pytest.fixture(scope="session")
def dask_processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskProcesses]:
    """A real ``dask scheduler`` and two ``dask worker`` processes (nannies, 2 threads each)."""
    pytest.importorskip("distributed")
    cluster = DaskProcesses(tmp_path_factory.mktemp("dask-cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def dask_client(dask_processes: DaskProcesses):
    """A client of the session's cluster, once both workers are up."""
    from distributed import Client

    client = Client(dask_processes.address, timeout=STARTUP_TIMEOUT, set_as_default=False)
    try:
        client.wait_for_workers(N_WORKERS, timeout=STARTUP_TIMEOUT)
        yield client
    finally:
        client.close()


@pytest.fixture
def dask_executor(dask_client):
    """An ``fd.DaskExecutor`` on the session's cluster (the client is not its to close)."""
    from flowdispatch.executors.dask import DaskExecutor

    with DaskExecutor(client=dask_client) as executor:
        yield executor
