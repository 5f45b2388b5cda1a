"""A cache in a shared store (an fsspec URL): an S3-compatible server on 127.0.0.1,
read and written by this process, by real dask workers and by another client.

The server is moto's, started in this process on a free port; s3fs finds it and
its credentials through environment variables (the workers and the other
client get them at start) and fsspec's configuration (this process).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
import warnings
from collections.abc import Iterator

import pytest

import flowdispatch as fd
from flowdispatch.testing import append_line, read_lines

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

SECRET = "a secret of the tests, 32 bytes"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
STARTUP_TIMEOUT = 60.0

# -- ops (module level: worker processes and the other client import this module) ----------


@fd.op(cache=True)
def fetch(log, x):
    append_line(log, f"fetch {x}")
    return x * 10


@fd.op(cache=True)
def combine(log, xs):
    append_line(log, "combine")
    return sum(xs)


def workflow(log, n=4):
    return combine(log, [fetch(log, i) for i in range(n)])


# -- the server, its buckets, and a cluster that reaches them --------------------------------


@pytest.fixture(scope="module")
def s3_env() -> Iterator[dict[str, str]]:
    """A moto S3 server on 127.0.0.1; the environment that points s3fs at it."""
    import fsspec.config
    import s3fs

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved_env = {name: os.environ.get(name) for name in CREDENTIALS}
    saved_conf = fsspec.config.conf.get("s3")
    os.environ.update(CREDENTIALS)
    fsspec.config.conf["s3"] = {"endpoint_url": endpoint}
    try:
        yield {**CREDENTIALS, "FSSPEC_S3_ENDPOINT_URL": endpoint}
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        if saved_conf is None:
            fsspec.config.conf.pop("s3", None)
        else:
            fsspec.config.conf["s3"] = saved_conf
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.stop()


@pytest.fixture
def bucket(s3_env) -> str:
    """A new bucket: ``s3://<bucket>/cache`` is the cache's URL."""
    import fsspec

    name = f"cache-{uuid.uuid4().hex[:12]}"
    fsspec.filesystem("s3").mkdir(name)
    return f"s3://{name}/cache"


@pytest.fixture
def signed(bucket) -> Iterator[str]:
    with fd.config.set(cache_dir=bucket, cache_secret=SECRET):
        yield bucket


@pytest.fixture(scope="module")
def s3_cluster(s3_env, tmp_path_factory):
    """A real scheduler and two workers whose environment reaches the server, with the
    cache secret; yields ``(executor, address, environment)``."""
    from distributed import Client

    from conftest import DaskProcesses
    from flowdispatch.executors.dask import DaskExecutor

    env = {**s3_env, "DASK_FLOWDISPATCH__CACHE_SECRET": SECRET}
    cluster = DaskProcesses(tmp_path_factory.mktemp("s3-cluster"), env=env)
    try:
        cluster.start()
        with Client(cluster.address, timeout=STARTUP_TIMEOUT, set_as_default=False) as client, \
                DaskExecutor(client=client) as executor:
            client.wait_for_workers(cluster.n_workers, timeout=STARTUP_TIMEOUT)
            yield executor, cluster.address, env
    finally:
        cluster.stop()


def entry_url(url: str, target) -> str:
    from flowdispatch.cache import entry_path, lineage_keys

    return entry_path(str(lineage_keys(fd.Graph(target), {})[target.key]), url)


# -- tests -----------------------------------------------------------------------------------


def test_a_shared_store_without_a_secret_is_refused(bucket, tmp_path):
    log = str(tmp_path / "log")
    with fd.config.set(cache_dir=bucket), \
            pytest.raises(fd.CacheError, match="is a shared store.*Set a cache secret.*"
                                               "cache_secret.*DASK_FLOWDISPATCH__CACHE_SECRET"):
        fd.run(workflow(log), executor="sync")
    assert read_lines(log) == []  # refused before anything ran
    path = f"{bucket}/ab/abcdef"
    with fd.config.set(cache_dir=bucket):  # a worker without the secret: nothing written
        with pytest.warns(fd.CacheWarning, match="could not be saved.*CacheError.*cache secret"):
            fd.cache.save(path, 1)
        assert fd.cache.entries() == []
    with fd.config.set(cache_secret=SECRET):
        fd.cache.save(path, 1)
    with fd.config.set(cache_dir=bucket), \
            pytest.warns(fd.CacheWarning, match="cached values are not read.*cache secret"):
        assert fd.cache.load(path) == (False, None)


def test_a_cached_workflow_in_a_bucket(signed, tmp_path, capsys):
    log = str(tmp_path / "log")
    first = fd.run(workflow(log), executor="threads")
    assert first.counts == {"done": 5} and first[first.targets[0]] == 60
    target = workflow(log)
    again = fd.run(target, executor="sync")
    assert again.counts == {"cached": 1} and again[target] == 60
    assert sorted(read_lines(log)) == ["combine", "fetch 0", "fetch 1", "fetch 2", "fetch 3"]
    each = [fetch(log, i) for i in range(4)]  # four entries, read together
    assert fd.run(*each, executor="sync").counts == {"cached": 4}
    import fsspec

    blob = fsspec.open(entry_url(signed, target), "rb").open().read()
    assert blob.split(b"\n")[1].startswith(b"hmac-sha256 ")  # signed
    found = fd.cache.sizes()
    assert sorted(found) == sorted(fd.cache.entries(signed)) and len(found) == 5
    assert entry_url(signed, target) in found
    from flowdispatch.cli import main

    assert main(["cache"]) == 0
    assert capsys.readouterr().out.startswith(f"{signed}: 5 entries (0.0 MB)")
    fs = fsspec.filesystem("s3")
    fs.pipe_file(f"{signed[5:]}/ab/not-ours", b"something else")  # not an entry: kept
    assert fd.cache.clear(signed + "/") == (5, sum(found.values()))
    assert fd.cache.entries() == [] and fs.exists(f"{signed[5:]}/ab/not-ours")


@pytest.mark.parametrize("keep", [0, 30, -1])
def test_a_torn_object_is_refused_and_recomputed(signed, tmp_path, keep):
    import fsspec

    log = str(tmp_path / "log")
    target = fetch(log, 5)
    assert fd.compute(target, executor="sync") == (50,)
    url = entry_url(signed, target)
    with fsspec.open(url, "rb") as f:
        whole = f.read()
    with fsspec.open(url, "wb") as f:  # a partial object under the entry's name
        f.write(whole[:keep])
    with pytest.warns(fd.CacheWarning, match="could not be read .*runs again"):
        res = fd.run(fetch(log, 5), executor="sync")
    assert res.counts == {"done": 1}
    assert read_lines(log) == ["fetch 5", "fetch 5"]
    with fsspec.open(url, "rb") as f:
        assert f.read() == whole  # replaced, whole
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fd.run(fetch(log, 5), executor="sync").counts == {"cached": 1}


def test_an_object_copied_under_another_entrys_name_is_refused(signed, tmp_path):
    import fsspec

    log = str(tmp_path / "log")
    assert fd.compute(fetch(log, 1), fetch(log, 2), executor="sync") == (10, 20)
    fs = fsspec.filesystem("s3")
    fs.copy(entry_url(signed, fetch(log, 1))[5:], entry_url(signed, fetch(log, 2))[5:])
    with pytest.warns(fd.CacheWarning, match="holds the value of key .*a copied, moved"):
        assert fd.compute(fetch(log, 2), executor="sync") == (20,)
    assert sorted(read_lines(log)) == ["fetch 1", "fetch 2", "fetch 2"]


def test_the_memory_store_needs_no_secret(tmp_path):
    log = str(tmp_path / "log")
    url = f"memory://flowdispatch-tests/{uuid.uuid4().hex}"
    with fd.config.set(cache_dir=url):
        assert fd.run(workflow(log), executor="threads").counts == {"done": 5}
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert fd.run(workflow(log), executor="sync").counts == {"cached": 1}
        assert len(fd.cache.entries()) == 5
        assert fd.cache.clear()[0] == 5 and fd.cache.entries() == []
    assert len(read_lines(log)) == 5


def test_a_file_url_is_a_local_folder(tmp_path):
    log = str(tmp_path / "log")
    with fd.config.set(cache_dir=f"file://{tmp_path}/cache/"):
        assert fd.cache.cache_dir() == str(tmp_path / "cache")
        fd.run(fetch(log, 1), executor="sync")
        assert fd.run(fetch(log, 1), executor="sync").counts == {"cached": 1}
        assert fd.cache.entries() == fd.cache.entries(str(tmp_path / "cache"))
    assert len(os.listdir(tmp_path / "cache")) == 1


def test_a_store_without_atomic_puts_gets_a_temporary_name_moved_into_place(monkeypatch):
    import fsspec

    from flowdispatch.cache import remote

    monkeypatch.setattr(remote, "ATOMIC_PUT", frozenset())
    root = f"memory://flowdispatch-tests/{uuid.uuid4().hex}"
    remote.write(f"{root}/ab/abc", b"entry")
    fs = fsspec.filesystem("memory")
    assert fs.find(root) == [f"{root[len('memory:/'):]}/ab/abc"]  # no temporary left
    assert remote.read(f"{root}/ab/abc") == b"entry"

    def fail(*args, **kwargs):
        raise OSError("the move failed")

    monkeypatch.setattr(type(fs), "mv", fail)
    with pytest.raises(OSError, match="the move failed"):
        remote.write(f"{root}/ab/abd", b"entry")
    assert len(fs.find(root)) == 1 and remote.read(f"{root}/ab/abd") is None


@pytest.mark.parametrize("url, store, signing", [
    ("s3://bucket/cache", "s3", True), ("GS://bucket", "gs", True),
    ("simplecache::s3://bucket/cache", "s3", True), ("memory://cache", "memory", False),
])
def test_which_store_a_url_names(url, store, signing):
    from flowdispatch.cache import remote

    assert (remote.protocol(url), remote.needs_signing(url)) == (store, signing)


_OTHER_CLIENT = """
import json, sys
import flowdispatch as fd
import test_cache_remote as t
with fd.config.set(cache_dir=sys.argv[1]):
    target = t.workflow(sys.argv[2])
    res = fd.run(target, executor=sys.argv[3])
    print(json.dumps([res.counts, res[target]]))
"""


def _other_client(env: dict[str, str], url: str, log: str, executor: str) -> list:
    from conftest import ROOT, _environment

    done = subprocess.run([sys.executable, "-c", _OTHER_CLIENT, url, log, executor],
                          env={**_environment(), **env}, cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_dask_workers_share_a_bucket(s3_cluster, signed, tmp_path):
    executor, address, env = s3_cluster
    log = str(tmp_path / "log")
    first = fd.run(workflow(log), executor=executor)
    assert first.counts == {"done": 5}
    assert len(fd.cache.entries()) == 5  # saved by the workers, in the bucket
    again = fd.run(workflow(log), executor=executor)
    assert again.counts == {"cached": 1} and again[again.targets[0]] == 60
    for run_on in (address, "sync"):  # another client: on the cluster, and on its own
        assert _other_client(env, signed, log, run_on) == [{"cached": 1}, 60]
    assert len(read_lines(log)) == 5  # every op ran once, on a worker
