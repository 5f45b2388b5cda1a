"""Configuration through dask.config under the flowdispatch namespace."""

import dask.config
import pytest

import flowdispatch as fd


def test_defaults():
    assert fd.config.DEFAULTS == {"executor": "threads", "cache_dir": None,
                                   "cache_secret": None, "max_dynamic_nodes": 1_000_000,
                                   "no_workers_timeout": 60.0,
                                   "pure": False}
    assert fd.config.get("executor") == "threads"
    assert fd.config.get("cache_dir") is None


def test_settings_live_in_dask_config():
    assert dask.config.get("flowdispatch.executor") == "threads"
    with dask.config.set({"flowdispatch.executor": "processes"}):
        assert fd.config.get("executor") == "processes"


def test_set_is_a_context_manager_that_undoes():
    with fd.config.set(executor="sync", cache_dir="/tmp/fd-cache"):
        assert (fd.config.get("executor"), fd.config.get("cache_dir")) == ("sync", "/tmp/fd-cache")
        with fd.config.set(executor="processes"):
            assert fd.config.get("executor") == "processes"
        assert fd.config.get("executor") == "sync"
    assert (fd.config.get("executor"), fd.config.get("cache_dir")) == ("threads", None)


def test_set_without_with_stays_until_undone():
    undo = fd.config.set(executor="sync")
    try:
        assert fd.config.get("executor") == "sync"
    finally:
        undo.__exit__(None, None, None)
    assert fd.config.get("executor") == "threads"


def test_unknown_settings_are_refused():
    with pytest.raises(KeyError, match=r"unknown flowdispatch setting 'exector'; expected one "
                                       r"of \['cache_dir', 'cache_secret', 'executor', 'max_dynamic_nodes', "
                                       r"'no_workers_timeout', 'pure'\]"):
        fd.config.set(exector="sync")
    with pytest.raises(KeyError, match=r"unknown flowdispatch setting 'color'"):
        fd.config.get("color")
    assert fd.config.get("executor") == "threads"
