"""Cached ops on a real dask cluster: a value lost with a worker is reloaded, not recomputed.

The cluster is the session's (see conftest.py): a ``dask scheduler`` and two
``dask worker`` processes with nannies, which restart a worker that dies. Ops
count their runs in files (the workers are other processes); every wait is
bounded.
"""

from __future__ import annotations

import os
import signal

import pytest

import flowdispatch as fd
from flowdispatch.cache import entries
from flowdispatch.testing import append_line, read_lines

pytest.importorskip("distributed")

from conftest import wait_for_workers_back  # noqa: E402

pytestmark = pytest.mark.timeout(120)


# -- ops (module level: the workers import this module) ----------------------------------
def counted(log: str, x: int) -> int:
    """``10 * x``, noting each run in ``log``."""
    append_line(log, str(x))
    return 10 * x


def dies_once(marker: str, x: int) -> int:
    """SIGKILL this worker the first time (while ``marker`` does not exist); then ``x + 1``."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return x + 1


# -- helpers ------------------------------------------------------------------------------
def _pinned(fn, one: str, **options):
    """``fn`` as an op that prefers worker ``one`` (and may run elsewhere once it dies)."""
    return fd.op(fn, workers=[one], allow_other_workers=True, **options)


def _on_one_worker(tmp_path, client, fuse: bool):
    """Run ``dies_once(counted(4))``, both on one worker, with the cache in ``tmp_path``;
    also what the callbacks heard of reloads."""
    from flowdispatch.executors.dask import DaskExecutor

    one = sorted(client.scheduler_info(n_workers=-1)["workers"])[0]
    log = str(tmp_path / "counted.log")
    up = _pinned(counted, one, cache=True)(log, 4)
    down = _pinned(dies_once, one)(str(tmp_path / "marker"), up)
    heard: list = []

    class Reloads(fd.Callback):
        def on_node_reload(self, *, node, count):
            heard.append((node.key, count))

    with fd.config.set(cache_dir=str(tmp_path / "cache")), \
            DaskExecutor(client=client, fuse=fuse) as executor:
        res = fd.run(down, executor=executor, callbacks=[Reloads()]) if not fuse else None
        value = res[down] if res is not None else fd.compute(down, executor=executor)[0]
    wait_for_workers_back(client, gone=[one])
    return res, up, down, value, read_lines(log), heard


# -- tests --------------------------------------------------------------------------------
def test_a_cached_value_lost_with_its_worker_is_reloaded_not_recomputed(dask_client, tmp_path):
    res, up, down, value, runs, heard = _on_one_worker(tmp_path, dask_client, fuse=False)
    assert value == 41
    assert runs == ["4"], "the cached op ran again instead of being reloaded"
    assert (res.state(up), res.attempts(up)) == ("done", 1)
    assert res.reloads(up) == 1
    assert (res.attempts(down), res.reloads(down)) == (2, 0)
    assert heard == [(up.key, 1)]  # the callbacks hear of it
    from flowdispatch.cli import summary

    assert [n["reloads"] for n in summary(res)["nodes"]] == [1, 0]  # and the JSON says so


def test_a_fused_chain_run_again_reloads_its_cached_steps(dask_client, tmp_path):
    _, _, _, value, runs, _ = _on_one_worker(tmp_path, dask_client, fuse=True)
    assert value == 41
    assert runs == ["4"], "the cached step of the chain ran again instead of being reloaded"


def test_a_step_loads_an_entry_it_finds_instead_of_running(tmp_path):
    calls = str(tmp_path / "calls.log")
    node = fd.op(counted, cache=True)(calls, 3)
    with fd.config.set(cache_dir=str(tmp_path / "cache")):
        assert fd.compute(node, executor="sync") == (30,)
        entry, = entries()
        graph = fd.Graph(node)
        from flowdispatch.executors.dask.lower import Lowered

        lowered = Lowered(graph, {}, run=None, stores={node.key: entry})
        step = lowered.tasks[node.key].func
        assert step() == 30
    assert read_lines(calls) == ["3"]


@fd.op(cache=True)
def doubled(x: int) -> int:
    return 2 * x


def test_values_the_workers_cannot_save_are_one_warning_on_the_client(dask_client, tmp_path):
    """A worker that cannot write the cache (here a file stands where its folders would
    go; on a cluster, a worker without the store's credentials or the secret) logs it
    where nobody looks: the client says so, once per run."""
    from flowdispatch.executors.dask import DaskExecutor

    blocked = tmp_path / "a-file"
    blocked.write_text("")
    nodes = [doubled(i) for i in range(3)]
    with fd.config.set(cache_dir=str(blocked)), DaskExecutor(client=dask_client) as executor:
        with pytest.warns(fd.CacheWarning, match=r"3 values could not be saved to the cache "
                                                 r"by the dask workers.*at '.*a-file"):
            res = fd.run(*nodes, executor=executor)
    assert [res[node] for node in nodes] == [0, 2, 4] and res.counts == {"done": 3}
