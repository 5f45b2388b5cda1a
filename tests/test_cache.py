"""The on-disk cache: values found by lineage, on every executor, and what breaks it.

Ops count their calls in files (process pools and dask workers are other
processes).
"""

from __future__ import annotations

import functools
import importlib
import operator
import os
import re
import sys
import threading
import warnings

import pytest

import flowdispatch as fd
from flowdispatch.cache import cache_dir
from flowdispatch.testing import append_line, read_lines

# -- ops (module level: worker processes import this module) -------------------------------


@fd.op
def load(log, x):
    append_line(log, f"load {x}")
    return x


@fd.op(cache=True)
def process(log, x):
    append_line(log, f"process {x}")
    return x * 10


@fd.op
def report(log, x):
    append_line(log, f"report {x}")
    return f"result {x}"


@fd.op(cache=True)
def step(log, x, fail_flag=None):
    if fail_flag is not None and os.path.exists(fail_flag):
        raise RuntimeError("the machine went down")
    append_line(log, f"step {x}")
    return x + 1


@fd.op(cache=True)
def describe(log, x):
    append_line(log, "describe")
    return type(x).__name__


@fd.op(cache=True)
def make_lock(log):
    append_line(log, "make_lock")
    return threading.Lock()


def calls(log: str) -> list[str]:
    return read_lines(log)


@pytest.fixture
def folder(tmp_path):
    with fd.config.set(cache_dir=str(tmp_path / "cache")):
        yield tmp_path / "cache"


# -- tests ---------------------------------------------------------------------------------


@pytest.mark.parametrize("executor", ["sync", "threads", "processes"])
def test_a_second_run_reads_the_value_and_skips_what_only_it_needed(folder, tmp_path, executor):
    log = str(tmp_path / "log")

    def workflow():
        return report(log, process(log, load(log, 7)))

    first = fd.run(workflow(), executor=executor)
    assert first.ok and first[first.targets[0]] == "result 70"
    assert calls(log) == ["load 7", "process 7", "report 70"]

    target = workflow()
    again = fd.run(target, executor=executor)
    assert again[target] == "result 70"
    assert calls(log)[3:] == ["report 70"]  # load and process did not run again
    cached = [n for n in again.graph if n.name == "process"]
    assert [again.state(n) for n in cached] == ["cached"]
    assert not any(n.name == "load" for n in again.graph)  # only the cached node needed it
    assert fd.compute(workflow(), executor=executor) == ("result 70",)
    assert len(os.listdir(folder)) == 1  # one value, in its two-letter folder


def test_other_arguments_and_other_upstream_values_get_their_own_entries(folder, tmp_path):
    log = str(tmp_path / "log")
    assert fd.compute(process(log, 1), process(log, 2), executor="sync") == (10, 20)
    assert fd.compute(process(log, 1), process(log, load(log, 3)), executor="sync") == (10, 30)
    assert sorted(c for c in calls(log) if c.startswith("process")) == \
        ["process 1", "process 2", "process 3"]


def test_a_new_version_invalidates_the_op_and_everything_downstream(folder, tmp_path):
    log = str(tmp_path / "log")

    def workflow(version):
        first = fd.op(cache=True, version=version, name="first")(lambda log, x: (
            append_line(log, f"first {x}"), x)[1])
        return step(log, first(log, 1))

    assert fd.compute(workflow("1"), executor="sync") == (2,)
    assert fd.compute(workflow("1"), executor="sync") == (2,)
    assert calls(log) == ["first 1", "step 1"]
    assert fd.compute(workflow("2"), executor="sync") == (2,)
    assert calls(log)[2:] == ["first 1", "step 1"]  # both ran again


def test_editing_an_ops_source_invalidates_it(folder, tmp_path, monkeypatch):
    log = str(tmp_path / "log")
    module = tmp_path / "edited_ops.py"
    source = ("import flowdispatch as fd\n"
              "from flowdispatch.testing import append_line\n"
              "@fd.op(cache=True)\n"
              "def scale(log, x):\n"
              "    append_line(log, 'scale')\n"
              "    return x * {factor}\n")
    module.write_text(source.format(factor=2))
    monkeypatch.syspath_prepend(str(tmp_path))
    edited = importlib.import_module("edited_ops")
    try:
        assert fd.compute(step(log, edited.scale(log, 5)), executor="sync") == (11,)
        assert fd.compute(step(log, edited.scale(log, 5)), executor="sync") == (11,)
        module.write_text(source.format(factor=3))
        edited = importlib.reload(edited)
        assert fd.compute(step(log, edited.scale(log, 5)), executor="sync") == (16,)
        assert calls(log) == ["scale", "step 10", "scale", "step 15"]
    finally:
        sys.modules.pop("edited_ops", None)


def test_a_rerun_after_a_crash_skips_what_completed(folder, tmp_path):
    log, flag = str(tmp_path / "log"), str(tmp_path / "down")
    open(flag, "w").close()

    def workflow():
        return step(log, step(log, step(log, 0)), fail_flag=flag)

    crashed = fd.run(workflow(), executor="threads")
    assert crashed.counts == {"done": 2, "failed": 1}
    os.remove(flag)
    target = workflow()
    after = fd.run(target, executor="threads")
    assert after[target] == 3
    assert after.counts == {"cached": 1, "done": 1}  # the first step was not even needed
    assert calls(log) == ["step 0", "step 1", "step 2"]


def test_arguments_that_cannot_be_tokenized_are_not_cached_with_a_warning(folder, tmp_path):
    log = str(tmp_path / "log")
    with pytest.warns(fd.CacheWarning, match=r"has cache=True but is not cached.*tokenized"):
        assert fd.compute(describe(log, threading.Lock()), executor="sync") == ("lock",)
    assert calls(log) == ["describe"]
    assert not folder.exists()


def test_values_that_cannot_be_pickled_are_not_cached_with_a_warning(folder, tmp_path):
    log = str(tmp_path / "log")
    with pytest.warns(fd.CacheWarning, match=r"could not be saved to the cache.*run again"):
        lock, = fd.compute(make_lock(log), executor="sync")
    assert hasattr(lock, "acquire")
    with pytest.warns(fd.CacheWarning):
        fd.compute(make_lock(log), executor="sync")
    assert calls(log) == ["make_lock", "make_lock"]


def entries(folder):
    return [entry for sub in folder.iterdir() for entry in sub.iterdir()]


@pytest.mark.parametrize("damage, why", [
    (lambda entry: entry.write_bytes(b"not a pickle"), "not a flowdispatch cache entry"),
    (lambda entry: entry.write_bytes(entry.read_bytes()[:-3]), "checksum mismatch"),  # torn
])
def test_a_damaged_entry_warns_and_the_node_runs_again(folder, tmp_path, damage, why):
    log = str(tmp_path / "log")
    fd.compute(process(log, 4), executor="sync")
    damage(*entries(folder))
    with pytest.warns(fd.CacheWarning, match=f"could not be read.*{why}"):
        assert fd.compute(process(log, 4), executor="sync") == (40,)
    assert calls(log) == ["process 4", "process 4"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rewritten: read back without a word
        assert fd.compute(process(log, 4), executor="sync") == (40,)


def test_entries_of_another_user_are_not_loaded_and_folders_are_private(folder, tmp_path,
                                                                          monkeypatch):
    log = str(tmp_path / "log")
    fd.compute(process(log, 4), executor="sync")
    entry, = entries(folder)
    assert [oct(p.stat().st_mode & 0o777) for p in (folder, entry.parent)] == ["0o700"] * 2
    monkeypatch.setattr(os, "getuid", lambda: entry.stat().st_uid + 1)  # someone else now
    with pytest.warns(fd.CacheWarning, match="belongs to user id .* not to you"):
        assert fd.compute(process(log, 4), executor="sync") == (40,)
    assert calls(log) == ["process 4", "process 4"]


def test_the_default_directory_is_the_users_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    with fd.config.set(cache_dir=None):
        assert cache_dir() == str(tmp_path / "xdg" / "flowdispatch")
        fd.compute(process(str(tmp_path / "log"), 1), executor="sync")
    assert (tmp_path / "xdg" / "flowdispatch").is_dir()
    with fd.config.set(cache_dir=42), pytest.raises(TypeError, match="cache_dir: expected a"):
        cache_dir()


def test_version_must_name_the_code():
    with pytest.raises(TypeError, match=r"version= expected a string .* got \[1\]"):
        fd.op(version=[1])(lambda: 1)


def test_cached_nodes_have_their_own_colour(folder, tmp_path):
    log = str(tmp_path / "log")
    fd.run(process(log, 1), executor="sync")
    res = fd.run(process(log, 1), executor="sync")
    svg = res.visualize(format="svg").pipe(format="svg").decode()
    assert "cached" in svg


def test_the_cache_on_dask_workers(folder, tmp_path, dask_executor):
    log = str(tmp_path / "log")

    def workflow():
        return report(log, process(log, load(log, 7)))

    assert fd.compute(workflow(), executor=dask_executor) == ("result 70",)
    target = workflow()
    again = fd.run(target, executor=dask_executor)
    assert again[target] == "result 70"
    assert calls(log) == ["load 7", "process 7", "report 70", "report 70"]
    assert again.counts == {"cached": 1, "done": 1}


def test_ops_without_source_are_told_apart_by_their_token(folder):
    double = fd.op(functools.partial(operator.mul, 2), cache=True, name="double")
    triple = fd.op(functools.partial(operator.mul, 3), cache=True, name="triple")
    assert fd.compute(double(5), triple(5), executor="sync") == (10, 15)
    res = fd.run(double(5), triple(5), executor="sync")
    assert [res[t] for t in res.targets] == [10, 15]
    assert res.counts == {"cached": 2}


def test_a_run_reads_only_the_values_it_needs(folder, tmp_path):
    from flowdispatch.cache import lineage_keys

    log = str(tmp_path / "log")

    def chain():
        return step(log, step(log, step(log, 0)))

    target = chain()
    assert fd.compute(target, executor="sync") == (3,)
    keys = lineage_keys(fd.Graph(target), {})
    first, second, third = (folder / keys[n.key][:2] / keys[n.key] for n in fd.Graph(target))
    first.write_bytes(b"damaged")  # never read: the last value is there
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = fd.run(chain(), executor="sync")
    assert res.counts == {"cached": 1} and res[res.targets[0]] == 3
    third.write_bytes(b"damaged")  # read, found damaged: the second is read instead
    with pytest.warns(fd.CacheWarning) as record:
        res = fd.run(chain(), executor="sync")
    assert len(record) == 1 and res.counts == {"cached": 1, "done": 1}
    assert calls(log) == ["step 0", "step 1", "step 2", "step 2"]


def test_entries_and_clear_touch_only_cached_values(folder, tmp_path):
    from flowdispatch.cache import clear, entries

    log = str(tmp_path / "log")
    fd.compute(process(log, 1), process(log, 2), executor="sync")
    mine = entries()
    assert len(mine) == 2 and all(str(folder) in path for path in mine)
    (folder / "notes.txt").write_text("the user's own file")
    (folder / "ab").mkdir(exist_ok=True)
    (folder / "ab" / "other").write_text("not a cache entry")
    size = sum(os.path.getsize(path) for path in mine)
    assert clear() == (2, size)
    assert entries() == [] and (folder / "notes.txt").exists() and (folder / "ab" / "other").exists()
    assert fd.compute(process(log, 1), executor="sync") == (10,)  # runs again
    assert calls(log).count("process 1") == 2


# -- entries bound to their keys, folders to trust ------------------------------------------


def entry_of(folder, target):
    from flowdispatch.cache import lineage_keys

    key = lineage_keys(fd.Graph(target), {})[target.key]
    return folder / key[:2] / key


@pytest.mark.parametrize("swap", ["copy", "move", "symlink"])
def test_an_entry_read_under_another_key_is_refused(folder, tmp_path, swap):
    log = str(tmp_path / "log")
    assert fd.compute(process(log, 1), process(log, 2), executor="sync") == (10, 20)
    one, two = entry_of(folder, process(log, 1)), entry_of(folder, process(log, 2))
    one.unlink()
    if swap == "copy":
        one.write_bytes(two.read_bytes())
    elif swap == "move":
        two.rename(one)
    else:
        one.symlink_to(two)
    with pytest.warns(fd.CacheWarning, match=r"holds the value of key '\w+', not of '\w+' "
                                             r"\(a copied, moved or linked entry\)"):
        assert fd.compute(process(log, 1), executor="sync") == (10,)  # not 20
    assert calls(log).count("process 1") == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # replaced by a plain entry of its own
        assert fd.run(process(log, 1), executor="sync").counts == {"cached": 1}


def test_a_cache_folder_every_user_can_write_is_not_used(folder, tmp_path):
    log = str(tmp_path / "log")
    fd.compute(process(log, 4), executor="sync")
    folder.chmod(0o777)
    with pytest.warns(fd.CacheWarning, match=r"the cache folder '.*cache' is not used: it can be "
                                             r"written by every user \(mode 0o777\)\. Whoever"):
        assert fd.compute(process(log, 4), executor="sync") == (40,)
    assert calls(log) == ["process 4", "process 4"]
    entry, = entries(folder)
    entry.unlink()
    with pytest.warns(fd.CacheWarning, match="is not used: it can be written by every user"):
        fd.compute(process(log, 4), executor="sync")
    assert entries(folder) == []  # nothing saved there either
    folder.chmod(0o700)
    fd.compute(process(log, 4), executor="sync")
    (sub,) = folder.iterdir()
    sub.chmod(0o777)  # a two-letter folder is checked as well
    with pytest.warns(fd.CacheWarning, match=rf"the cache folder '.*{sub.name}' is not used: "
                                             "it can be written by every user"):
        fd.compute(process(log, 4), executor="sync")
    assert calls(log).count("process 4") == 5


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="giving a folder to another user needs root")
@pytest.mark.parametrize("inside", [False, True])
def test_a_cache_folder_linked_into_another_users_folder_is_not_used(tmp_path, inside):
    log = str(tmp_path / "log")
    other = tmp_path / "other"
    (other / "cache").mkdir(parents=True)  # ours, in a folder that is not
    os.chown(other, 65534, 65534)  # nobody's
    link = tmp_path / "cache"
    link.symlink_to(other / "cache" if inside else other)
    why = (r"lies in '.*other', which belongs to user id 65534" if inside
           else "belongs to user id 65534, not to you")
    with fd.config.set(cache_dir=str(link)):
        with pytest.warns(fd.CacheWarning, match=rf"is not used: it \(a symbolic link to "
                                                 rf"'.*other.*'\) {why}"):
            assert fd.compute(process(log, 4), executor="sync") == (40,)
        assert fd.cache.entries() == []


def test_entries_of_the_older_format_are_not_trusted_but_cleared(folder, tmp_path):
    import hashlib

    import cloudpickle

    from flowdispatch.cache import clear

    log = str(tmp_path / "log")
    fd.compute(process(log, 4), executor="sync")
    entry = entry_of(folder, process(log, 4))
    data = cloudpickle.dumps(99)  # what the older format held: no key
    entry.write_bytes(b"flowdispatch-cache-1\n" + hashlib.sha256(data).digest() + data)
    with pytest.warns(fd.CacheWarning, match="written by an older flowdispatch, whose entries "
                                             "are not bound to their keys; their nodes run"):
        assert fd.compute(process(log, 4), executor="sync") == (40,)
    entry.write_bytes(b"flowdispatch-cache-1\n" + hashlib.sha256(data).digest() + data)
    assert clear()[0] == 1


# -- signed entries ---------------------------------------------------------------------------

SECRET = "a secret of the tests, 32 bytes"


class Planted:
    """A value whose unpickling writes a file: what a planted entry could do."""

    def __init__(self, flag):
        self.flag = flag

    def __reduce__(self):
        return (append_line, (self.flag, "unpickled"))


def test_with_a_secret_entries_are_signed_and_read_back(folder, tmp_path):
    log = str(tmp_path / "log")
    with fd.config.set(cache_secret=SECRET):
        fd.compute(process(log, 4), executor="sync")
        entry = entry_of(folder, process(log, 4))
        assert entry.read_bytes().split(b"\n")[1] == b"hmac-sha256 " + entry.name.encode()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert fd.run(process(log, 4), executor="sync").counts == {"cached": 1}
    with fd.config.set(cache_secret="another secret, also long enough"):
        with pytest.warns(fd.CacheWarning, match=r"its signature does not match the cache "
                                                 r"secret \(it was signed with another secret"):
            assert fd.compute(process(log, 4), executor="sync") == (40,)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # without a secret: the checksum alone, as before
        assert fd.run(process(log, 4), executor="sync").counts == {"cached": 1}
    assert calls(log) == ["process 4", "process 4"]


def test_with_a_secret_an_unsigned_entry_is_not_read_and_is_replaced(folder, tmp_path):
    log = str(tmp_path / "log")
    fd.compute(process(log, 4), executor="sync")
    with fd.config.set(cache_secret=SECRET):
        with pytest.warns(fd.CacheWarning, match=r"unsigned entries in the cache folder '.*' "
                                                 r"are not read: a cache_secret is set.*same "
                                                 r"secret \(DASK_FLOWDISPATCH__CACHE_SECRET\)"):
            assert fd.compute(process(log, 4), executor="sync") == (40,)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert fd.run(process(log, 4), executor="sync").counts == {"cached": 1}
    assert calls(log) == ["process 4", "process 4"]


def test_a_planted_pickle_is_never_unpickled_with_a_secret(folder, tmp_path):
    import cloudpickle

    from flowdispatch.cache.entryfile import seal

    log, flag = str(tmp_path / "log"), str(tmp_path / "flag")
    fd.compute(process(log, 4), executor="sync")
    entry = entry_of(folder, process(log, 4))
    planted = seal(entry.name, cloudpickle.dumps(Planted(flag)), secret=None)  # valid checksum
    entry.write_bytes(planted)
    with fd.config.set(cache_secret=SECRET), pytest.warns(fd.CacheWarning, match="unsigned"):
        assert fd.compute(process(log, 4), executor="sync") == (40,)
    assert not os.path.exists(flag)
    forged = seal(entry.name, cloudpickle.dumps(Planted(flag)), secret=b"a guess" * 3)
    entry.write_bytes(forged)
    with fd.config.set(cache_secret=SECRET), pytest.warns(fd.CacheWarning, match="signature"):
        assert fd.compute(process(log, 4), executor="sync") == (40,)
    assert not os.path.exists(flag)
    entry.write_bytes(planted)  # the threat without a secret: the checksum does not stop it
    assert fd.run(process(log, 4), executor="sync").counts == {"cached": 1}
    assert read_lines(flag) == ["unpickled"]


@pytest.mark.parametrize("secret, why", [
    ("short", r"cache_secret: expected at least 16 bytes, got 5; a short secret can be guessed"),
    (1234567890123456789, r"cache_secret: expected a string, got int; dask reads "
                          r"DASK_FLOWDISPATCH__CACHE_SECRET as a Python literal, so quote"),
])
def test_a_secret_that_cannot_be_one_is_refused(folder, tmp_path, secret, why):
    log = str(tmp_path / "log")
    with fd.config.set(cache_secret=secret):
        with pytest.warns(fd.CacheWarning, match=f"could not be saved to the cache.*{why}"):
            assert fd.compute(process(log, 4), executor="sync") == (40,)
    assert not folder.exists()
    fd.compute(process(log, 4), executor="sync")
    with fd.config.set(cache_secret=secret), pytest.warns(fd.CacheWarning) as record:
        assert fd.compute(process(log, 4), executor="sync") == (40,)
    assert [bool(re.search(f"cached values are not read: {why}", str(w.message)))
            for w in record] == [True, False]  # not read, then not saved
    assert calls(log) == ["process 4"] * 3


def test_dask_workers_sign_with_the_secret_of_their_environment(folder, tmp_path):
    from distributed import Client

    from conftest import STARTUP_TIMEOUT, DaskProcesses
    from flowdispatch.executors.dask import DaskExecutor

    log = str(tmp_path / "log")
    cluster = DaskProcesses(tmp_path / "cluster", n_workers=1,
                            env={"DASK_FLOWDISPATCH__CACHE_SECRET": SECRET})
    (tmp_path / "cluster").mkdir()
    try:
        cluster.start()
        with Client(cluster.address, timeout=STARTUP_TIMEOUT, set_as_default=False) as client, \
                DaskExecutor(client=client) as executor, fd.config.set(cache_secret=SECRET):
            client.wait_for_workers(1, timeout=STARTUP_TIMEOUT)
            assert fd.compute(report(log, process(log, 7)), executor=executor) == ("result 70",)
            entry = entry_of(folder, process(log, 7))  # saved by the worker, signed
            assert entry.read_bytes().split(b"\n")[1].startswith(b"hmac-sha256 ")
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                again = fd.run(report(log, process(log, 7)), executor=executor)
            assert again.counts == {"cached": 1, "done": 1}
    finally:
        cluster.stop()
    assert calls(log) == ["process 7", "report 70", "report 70"]


def test_values_saved_by_workers_without_the_secret_are_not_read(folder, tmp_path, dask_executor):
    log = str(tmp_path / "log")
    with fd.config.set(cache_secret=SECRET):  # the session's workers have none
        assert fd.compute(process(log, 7), executor=dask_executor) == (70,)
        with pytest.warns(fd.CacheWarning, match="unsigned entries .* If dask workers wrote "
                                                 "them, give the workers the same secret"):
            assert fd.compute(process(log, 7), executor=dask_executor) == (70,)
    assert calls(log) == ["process 7", "process 7"]


def test_the_embedded_clusters_workers_take_the_secret_in_force_when_it_starts(folder, tmp_path):
    from flowdispatch.executors.dask import DaskExecutor

    log = str(tmp_path / "log")
    with fd.config.set(cache_secret=SECRET), \
            DaskExecutor(n_workers=1, threads_per_worker=1, processes=True) as executor:
        assert fd.compute(process(log, 7), executor=executor) == (70,)
        assert entry_of(folder, process(log, 7)).read_bytes().split(b"\n")[1].startswith(
            b"hmac-sha256 ")
        assert fd.run(process(log, 7), executor=executor).counts == {"cached": 1}
    assert calls(log) == ["process 7"]
