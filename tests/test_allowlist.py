"""The allow list of Graph.from_json: its forms, and what it refuses."""

from __future__ import annotations

import pytest

from flowdispatch.core.allowlist import DEFAULT_ALLOW, Allow


def test_exact_names_modules_and_packages():
    allow = Allow(["pkg.", "tools", "other.mod:fn"])
    assert [p in allow for p in ["pkg:f", "pkg.sub.deep:f", "pkgx:f", "tools:f", "tools.sub:f",
                                 "other.mod:fn", "other.mod:gn"]] == \
        [True, True, False, True, False, True, False]


def test_the_default_holds_flowdispatchs_helpers_and_pure_builtins_only():
    allow = Allow()
    assert {"_operator:add", "_operator:getitem", "flowdispatch.core.node:_collect", "builtins:sum",
            "builtins:ValueError"} <= DEFAULT_ALLOW
    assert allow.refused(["builtins:getattr", "builtins:eval", "builtins:exec",
                          "builtins:__import__", "builtins:open", "flowdispatch.core.node:_call",
                          "flowdispatch.core.node:_call_method", "os:system", "_operator:add"]) == \
        ["builtins:getattr", "builtins:eval", "builtins:exec", "builtins:__import__",
         "builtins:open", "flowdispatch.core.node:_call", "flowdispatch.core.node:_call_method",
         "os:system"]


@pytest.mark.parametrize("allow, error, match", [
    ("pkg.", TypeError, r"allow: expected a list of names, such as \['pkg.'\]|allow: expected "
                        r"a list of names, such as \['mypackage.'\], got str 'pkg.'"),
    ([3], TypeError, r"allow: expected an exact name \('module:function'\), a module "
                     r"\('module'\) or a package and everything in it \('package.'\), got int 3"),
    (["*"], ValueError, r"allow: expected an exact name .* got '\*'"),
    ([""], ValueError, r"allow: expected an exact name .* got ''"),
    (["pkg.*"], ValueError, r"got 'pkg.\*'"),
])
def test_entries_that_are_none_of_the_forms_are_refused(allow, error, match):
    with pytest.raises(error, match=match):
        Allow(allow)
