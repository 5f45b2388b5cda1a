"""Node keys: "{name}-{token}", unique per call or deterministic for pure ops."""

import os
import re

import pytest
from dask.utils import key_split

from flowdispatch.core import keys


@pytest.mark.parametrize("raw, clean", [
    ("load", "load"), ("<lambda>", "lambda"), ("my op", "my_op"), ("a/b\\c", "a_b_c"),
    ("__init__", "init"), ("<>", "op"), ("", "op"), ("x[0]", "x[0]"), ("f.g-h", "f.g-h"),
    ("naïve", "naïve"), ("  spaced  ", "spaced"),
])
def test_clean_name(raw, clean):
    assert keys.clean_name(raw) == clean


def test_unique_keys():
    made = [keys.unique_key("load") for _ in range(1000)]
    assert len(set(made)) == 1000
    assert all(re.fullmatch(r"load-[0-9a-f]{10}\d+", key) for key in made)
    assert {key[:15] for key in made} == {made[0][:15]}  # one session prefix


@pytest.mark.parametrize("name", ["load", "load_data", "my-op", "x1", "deadbeef", "f.g"])
def test_key_split_gives_the_name(name):
    assert key_split(keys.unique_key(name)) == name
    assert key_split(keys.pure_key(name, 1, "a")) == name


def test_a_forked_process_gets_its_own_session():
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.write(write, keys.unique_key("x").encode())
        finally:
            os._exit(0)
    os.close(write)
    child = os.read(read, 100).decode()
    os.close(read)
    os.waitpid(pid, 0)
    mine = keys.unique_key("x")
    assert child.startswith("x-") and mine.startswith("x-")
    assert child[2:12] != mine[2:12]


def test_pure_keys_are_tokens_of_their_parts():
    assert keys.pure_key("add", 1, 2) == keys.pure_key("add", 1, 2)
    assert keys.pure_key("add", 1, 2) != keys.pure_key("add", 2, 1)
    assert keys.pure_key("add", [1], {"a": {1, 2}}) == keys.pure_key("add", [1], {"a": {2, 1}})
    assert re.fullmatch(r"add-[0-9a-f]{32}", keys.pure_key("add", 1, 2))
    assert keys.pure_key("add", 1).split("-")[1] == keys.pure_key("sub", 1).split("-")[1]
