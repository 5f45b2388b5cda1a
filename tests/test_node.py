"""Node: an immutable lazy value; keys, dependencies, lazy operators, the dask protocol."""

import collections
import dataclasses
import os
import re
import subprocess
import sys
import typing
from pathlib import Path

import dask
import pytest
from dask.utils import key_split

import flowdispatch as fd

ROOT = Path(__file__).resolve().parent.parent


@fd.op
def inc(x):
    return x + 1


@fd.op
def echo(*args, **kwargs):
    return args, kwargs


@fd.op(pure=True)
def pure_add(x, y):
    return x + y


@fd.op(nout=2)
def halves(rows):
    return rows[::2], rows[1::2]


@dataclasses.dataclass
class Box:
    item: object
    label: str = "box"


Pair = collections.namedtuple("Pair", "left right")


class Matrix:
    def __init__(self, n):
        self.n = n

    def __matmul__(self, other):
        return ("matmul", self.n, other)

    def __rmatmul__(self, other):
        return ("rmatmul", other, self.n)


# -- what a node is --------------------------------------------------------------------------

def test_a_node_is_immutable():
    node = inc(1)
    with pytest.raises(AttributeError, match=r"a Node is immutable: cannot set 'key'"):
        node.key = "other"
    with pytest.raises(AttributeError, match=r"a Node is immutable: cannot set 'extra'"):
        node.extra = 1
    with pytest.raises(AttributeError, match=r"a Node is immutable: cannot delete '_args'"):
        del node._args
    assert not hasattr(node, "__dict__")


def test_kwargs_is_a_copy():
    node = echo(1, flag=True)
    node.kwargs["flag"] = False
    assert node.kwargs == {"flag": True}


def test_node_is_generic():
    alias = fd.Node[int]
    assert typing.get_origin(alias) is fd.Node
    assert typing.get_args(alias) == (int,)

    def typed(n: fd.Node[int]) -> fd.Node[str]:
        return n

    assert typing.get_type_hints(typed)["n"] == fd.Node[int]


def test_own_attributes():
    node = inc(1)
    assert (node.name, node.op, node.args, node.kwargs, node.dependencies) == (
        "inc", inc, (1,), {}, ())
    with pytest.raises(AttributeError, match=r"'Node' object has no attribute '_secret'"):
        node._secret


# -- keys ------------------------------------------------------------------------------------

def test_key_is_name_dash_token():
    node = inc(1)
    assert re.fullmatch(r"inc-[0-9a-f]{10}\d+", node.key)
    assert key_split(node.key) == "inc" == node.name


@pytest.mark.parametrize("name, prefix", [
    ("load_data", "load_data"), ("my-op", "my-op"), ("a b", "a_b"), ("<lambda>", "lambda"),
    ("deadbeef", "deadbeef"), ("x1", "x1"), ("f.g", "f.g"),
])
def test_key_split_gives_the_name_back(name, prefix):
    for node in (fd.op(len, name=name)("x"), fd.op(len, name=name, pure=True)("x")):
        assert node.name == prefix
        assert key_split(node.key) == prefix


def test_keys_are_unique_per_call():
    keys = {inc(1).key for _ in range(1000)}
    assert len(keys) == 1000


def test_pure_keys_are_deterministic():
    assert pure_add(1, 2).key == pure_add(1, 2).key
    assert pure_add(1, 2) == pure_add(1, 2)
    assert pure_add(1, 2).key != pure_add(2, 1).key
    assert pure_add([1], {"a": {2, 3}}).key == pure_add([1], {"a": {3, 2}}).key
    assert re.fullmatch(r"pure_add-[0-9a-f]{32}", pure_add(1, 2).key)


def test_pure_keys_follow_their_arguments_keys():
    a, b = inc(1), inc(1)
    assert pure_add(a, 1).key == pure_add(a, 1).key
    assert pure_add(a, 1).key != pure_add(b, 1).key


def _pure_keys_in_subprocesses(argument):
    script = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from test_node import pure_add, Box, Pair\n"
        f"print(pure_add({argument}, 0).key)\n"
    )
    keys = set()
    for seed in ("0", "1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
        out = subprocess.run([sys.executable, "-c", script, str(ROOT / "tests")], env=env,
                             capture_output=True, text=True, timeout=60, check=True)
        keys.add(out.stdout.strip())
    return keys


def test_pure_keys_are_the_same_in_processes_with_other_hash_seeds():
    keys = _pure_keys_in_subprocesses(
        "([1, 'a', (2.5, None)], {'k': {3, 4, 'z'}, 'box': Box({'a', 'b'}), 'pair': Pair(1, 2)})")
    assert len(keys) == 1
    assert re.fullmatch(r"pure_add-[0-9a-f]{32}", keys.pop())


def test_pure_keys_of_a_frozenset_are_the_same_in_processes_with_other_hash_seeds():
    assert len(_pure_keys_in_subprocesses("frozenset(['a', 'b', 'c', 'd'])")) == 1


# -- dependencies ----------------------------------------------------------------------------

def test_dependencies_are_found_in_nested_containers_of_every_kind():
    n = [inc(i) for i in range(10)]
    node = echo(n[0], [n[1], (n[2],)], {"k": {"deeper": [n[3]]}}, {n[4]}, frozenset({n[5]}),
                Box(n[6]), Pair(n[7], Box([n[8]])), kw={"x": n[9]})
    assert node.dependencies == tuple(n)
    assert node.compute(executor="sync") == (
        (1, [2, (3,)], {"k": {"deeper": [4]}}, {5}, frozenset({6}), Box(7), Pair(8, Box([9]))),
        {"kw": {"x": 10}},
    )


def test_dependencies_are_listed_once_in_order():
    a, b = inc(1), inc(2)
    assert echo(b, [a, b], a, k=b).dependencies == (b, a)


def test_dict_keys_and_other_objects_are_not_scanned():
    a = inc(1)
    assert echo({a: 1}).dependencies == ()
    assert echo(object()).dependencies == ()
    assert echo("text", 1, 2.5, None, b"x").dependencies == ()


def test_a_node_in_a_dataclass_keeps_the_other_fields():
    box = Box(inc(1), label="mine")
    assert echo(box).compute(executor="sync") == ((Box(2, "mine"),), {})
    assert box.item.key  # the argument itself is not changed


# -- lazy operations -------------------------------------------------------------------------

def test_item_and_attribute_access_are_lazy():
    data = fd.value({"a": [1, 2, 3]})
    first = data["a"][0]
    assert isinstance(first, fd.Node)
    assert first.name == "getitem"
    c = fd.value(3 + 4j)
    assert c.imag.name == "getattr"
    assert fd.compute(first, data["a"][-1], data["a"][1:], c.imag, executor="sync") == (
        1, 3, [2, 3], 4.0)


def test_method_calls_are_lazy_and_named_after_the_method():
    text = fd.value("hello world")
    upper = text.upper()
    assert upper.name == "upper"
    assert fd.compute(upper, text.split(" ")[1], text.replace("o", "0"), executor="sync") == (
        "HELLO WORLD", "world", "hell0 w0rld")
    assert text.split(sep=" ").compute(executor="sync") == ["hello", "world"]


def test_calling_a_node_that_holds_a_function():
    maker = fd.op(lambda: (lambda y: y * 3), name="maker")()
    assert maker(5).name == "call"
    assert maker(5).compute(executor="sync") == 15


def test_operators_and_reflected_operators():
    x = fd.value(10)
    exprs = {
        "x + 1": x + 1, "1 + x": 1 + x, "x - 3": x - 3, "3 - x": 3 - x, "x * 2": x * 2,
        "2 * x": 2 * x, "x / 4": x / 4, "4 / x": 4 / x, "x // 3": x // 3, "30 // x": 30 // x,
        "x % 3": x % 3, "23 % x": 23 % x, "x ** 2": x ** 2, "2 ** x": 2 ** x,
        "x << 1": x << 1, "1 << x": 1 << x, "x >> 1": x >> 1, "4096 >> x": 4096 >> x,
        "x & 6": x & 6, "6 & x": 6 & x, "x | 5": x | 5, "5 | x": 5 | x, "x ^ 3": x ^ 3,
        "3 ^ x": 3 ^ x, "-x": -x, "+x": +x, "abs(-x)": abs(-x), "~x": ~x,
        "x < 11": x < 11, "x <= 10": x <= 10, "x > 10": x > 10, "x >= 10": x >= 10,
        "x + x": x + x,
    }
    assert all(isinstance(node, fd.Node) for node in exprs.values())
    assert fd.compute(exprs, executor="sync") == ({
        "x + 1": 11, "1 + x": 11, "x - 3": 7, "3 - x": -7, "x * 2": 20, "2 * x": 20,
        "x / 4": 2.5, "4 / x": 0.4, "x // 3": 3, "30 // x": 3, "x % 3": 1, "23 % x": 3,
        "x ** 2": 100, "2 ** x": 1024, "x << 1": 20, "1 << x": 1024, "x >> 1": 5,
        "4096 >> x": 4, "x & 6": 2, "6 & x": 2, "x | 5": 15, "5 | x": 15, "x ^ 3": 9,
        "3 ^ x": 9, "-x": -10, "+x": 10, "abs(-x)": 10, "~x": -11, "x < 11": True,
        "x <= 10": True, "x > 10": False, "x >= 10": True, "x + x": 20,
    },)


def test_matmul_and_its_reflection():
    m = fd.value(Matrix(2))
    assert fd.compute(m @ 5, 5 @ m, executor="sync") == (("matmul", 2, 5), ("rmatmul", 5, 2))


def test_operators_between_two_nodes_depend_on_both():
    a, b = inc(1), inc(2)
    total = a * b
    assert total.dependencies == (a, b)
    assert total.compute(executor="sync") == 6


# -- equality, hashing, truth ----------------------------------------------------------------

def test_nodes_compare_and_hash_by_key():
    a = inc(1)
    again = pure_add(1, 2)
    assert a == a and not (a != a)
    assert a != inc(1)
    assert again == pure_add(1, 2)
    assert hash(a) == hash(a.key)
    assert (a == "not a node") is False
    assert {a: "first", again: "second"}[pure_add(1, 2)] == "second"
    assert len({a, a, again, pure_add(1, 2)}) == 2


def test_bool_is_refused():
    node = inc(1)
    with pytest.raises(TypeError) as info:
        bool(node)
    assert str(info.value) == (
        f"the truth value of node {node.key!r} is not known until it runs: compute it first "
        "(node.compute()), or branch inside an op")
    with pytest.raises(TypeError, match="the truth value of node"):
        if node:
            pass


def test_len_and_iteration_of_an_unknown_length_are_refused():
    node = inc(1)
    message = (f"the length of node {node.key!r} is not known until it runs: give its op "
               "nout=N (or a '-> tuple[A, B]' return annotation) to unpack it, or index it "
               "lazily with node[i]")
    with pytest.raises(TypeError) as info:
        len(node)
    assert str(info.value) == message
    with pytest.raises(TypeError, match=re.escape(message)):
        iter(node)
    with pytest.raises(TypeError, match="the length of node"):
        first, second = node
    with pytest.raises(TypeError, match="the length of node"):
        list(node)


def test_nout_unpacking():
    node = halves([1, 2, 3, 4, 5])
    assert len(node) == 2
    even, odd = node
    assert [even.name, odd.name] == ["getitem", "getitem"]
    assert fd.compute(even, odd, node[-1], executor="sync") == ([1, 3, 5], [2, 4], [2, 4])


def test_nout_bounds_indexes():
    node = halves([1, 2])
    with pytest.raises(IndexError) as info:
        node[2]
    assert str(info.value) == f"node {node.key!r} has nout=2; index 2 is out of range"
    with pytest.raises(IndexError, match="index -3 is out of range"):
        node[-3]


def test_nout_from_options():
    node = fd.op(divmod, nout=2)(17, 5)
    q, r = node
    assert fd.compute(q, r, executor="sync") == (3, 2)


# -- data nodes and collect ------------------------------------------------------------------

def test_value_is_a_data_node():
    rows = fd.value([3, 1, 2], name="my rows")
    assert rows.name == "my_rows"
    assert (rows.op, rows.args, rows.dependencies) == (None, ([3, 1, 2],), ())
    assert fd.value(1).name == "value"
    assert fd.value(1) != fd.value(1)
    assert fd.op(sorted)(rows).compute(executor="sync") == [1, 2, 3]


def test_value_of_a_container_of_nodes_depends_on_them():
    a = inc(1)
    wrapped = fd.value([a, {"k": a}])
    assert wrapped.dependencies == (a,)
    assert wrapped.compute(executor="sync") == [2, {"k": 2}]


def test_collect_gathers_values_into_a_list():
    items = [inc(i) for i in range(3)]
    gathered = fd.collect(items, name="all")
    assert gathered.name == "all"
    assert gathered.dependencies == tuple(items)
    assert gathered.compute(executor="sync") == [1, 2, 3]
    assert fd.collect(x for x in [inc(5), 7]).compute(executor="sync") == [6, 7]
    assert fd.collect([]).compute(executor="sync") == []
    assert fd.collect([]).name == "collect"


# -- long chains -----------------------------------------------------------------------------

def test_repr_str_hash_and_eq_of_the_last_node_of_a_100000_chain():
    node = fd.value(0)
    for _ in range(100_000):
        node = inc(node)
    assert repr(node) == f"Node({node.key!r})"
    assert len(repr(node)) < 60
    assert str(node) == repr(node)
    assert hash(node) == hash(node.key)
    assert node == node and node != node.dependencies[0]


# -- the dask collection protocol ------------------------------------------------------------

def test_dask_compute_of_a_node():
    total = fd.op(sum)([inc(1), inc(2)])
    assert dask.compute(total) == (5,)
    assert dask.compute(total, scheduler="sync") == (5,)
    assert dask.compute({"t": total, "n": [inc(0)]}, scheduler="sync") == (
        {"t": 5, "n": [1]},)


def test_dask_get_on_the_lowered_graph():
    a = inc(1)
    b = echo(a, k=[a, fd.value(7)])
    dsk = fd.Graph(b).to_dask()
    assert set(dsk) == {node.key for node in fd.Graph(b)}
    assert dask.get(dsk, b.key) == ((2,), {"k": [2, 7]})
    assert dask.get(dsk, [a.key, b.key]) == (2, ((2,), {"k": [2, 7]}))


def test_dask_protocol_methods():
    a = inc(1)
    assert a.__dask_keys__() == [a.key]
    assert a.__dask_tokenize__() == a.key
    assert dask.base.tokenize(a) == dask.base.tokenize(a)
    assert set(a.__dask_graph__()) == {a.key}
    assert set(a.dask) == {a.key}
    assert dask.is_dask_collection(a)


# -- arguments: iterators, unset dataclass fields, deep nesting ----------------------------
@pytest.mark.parametrize("executor", ["sync", "threads"])
def test_iterators_and_generators_of_nodes_are_materialised_and_traversed(executor):
    a, b = inc(1), inc(2)
    total = fd.op(sum)(iter([a, b]))
    assert total.dependencies == (a, b) and total.args == ([a, b],)
    assert total.compute(executor=executor) == 5
    assert fd.op(sum)(x for x in (a, b)).compute(executor=executor) == 5
    nested = echo([iter([a])], key=zip([b], [1]))
    assert nested.compute(executor=executor) == (([[2]],), {"key": [(3, 1)]})
    assert fd.op(sum, pure=True)(iter([a])).key == fd.op(sum, pure=True)([a]).key


def test_an_open_file_is_passed_as_it_is(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("x\n")
    with open(path) as handle:
        assert fd.op(lambda f: f.read())(handle).compute(executor="sync") == "x\n"


@dataclasses.dataclass
class Derived:
    item: object
    total: int = dataclasses.field(init=False)


def test_a_dataclass_with_a_field_that_is_not_set():
    a = inc(1)
    node = fd.op(lambda d: (d.item, hasattr(d, "total")))(Derived(a))
    assert node.dependencies == (a,)
    assert node.compute(executor="sync") == (2, False)
    assert fd.op(lambda d: d.item, pure=True)(Derived(3)).compute(executor="sync") == 3


def test_an_argument_that_contains_itself_is_refused_by_name():
    loop: list = [1]
    loop.append(loop)
    with pytest.raises(ValueError, match=r"^argument 0 of 'inc' contains itself \(a list "
                                         r"inside itself\), so its nodes cannot be found"):
        inc(loop)
    mapping: dict = {}
    mapping["me"] = mapping
    with pytest.raises(ValueError, match=r"^argument 'y' of 'echo' contains itself"):
        echo(1, y=mapping)


def test_an_argument_100000_deep_is_refused_by_name():
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(ValueError, match=r"^argument 1 of 'echo' is nested too deeply to look "
                                         r"for nodes inside it"):
        echo(1, deep)
    assert fd.value(deep, traverse=False).dependencies == ()


# -- slices, hints ---------------------------------------------------------------------------
def test_a_lazy_slice_bound():
    text = fd.value("abcdef")
    stop = inc(2)
    head = text[:stop]
    assert stop in head.dependencies
    assert fd.compute(head, text[inc(0):inc(4):2], executor="sync") == ("abc", "bd")


def test_math_on_a_node_says_that_it_is_lazy():
    import math

    node = inc(1)
    with pytest.raises(TypeError, match=rf"^node {node.key!r} is lazy: it has no float value "
                                        r"until it runs. Call functions such as math.sqrt "
                                        r"inside an op \(fd.op\(math.sqrt\)\(node\)\)"):
        math.sqrt(node)
    with pytest.raises(TypeError, match="it has no integer value until it runs"):
        [1, 2][node]
    with pytest.raises(TypeError, match="it has no int value until it runs"):
        int(node)


def test_max_of_nodes_names_the_comparison_not_an_internal_node():
    node = inc(1)
    with pytest.raises(TypeError, match=rf"^Node\({node.key!r}\) < 2 compares a lazy node, so "
                                        r"its truth is not known until it runs: max\(\), min\(\), "
                                        r"sorted\(\) and if need values"):
        max([node, 2])


@pytest.mark.parametrize("name, method", [("comptue", "compute"), ("visualise", "visualize"),
                                          ("persits", "persist"), ("compute_", "compute"),
                                          ("dependancies", "dependencies")])
def test_a_misspelt_node_method_warns(name, method):
    node = inc(1)
    call = "" if method == "dependencies" else r"\(\)"
    with pytest.warns(UserWarning, match=rf"node.{name} is a lazy attribute of the node's "
                                         rf"value, not a method of the node: did you mean "
                                         rf"node.{method}{call}\?") as record:
        getattr(node, name)
    assert record[0].filename == __file__


def test_other_lazy_attributes_do_not_warn(recwarn):
    node = fd.value({"a": 1})
    node.keys()
    node.items
    node.compound
    assert not recwarn.list


# -- per-call purity, data node options, the pure setting -----------------------------------
def test_pure_on_a_lazy_method_call_is_not_passed_to_the_method():
    text = fd.value("a b")
    first, second = text.split(" ", pure=True), text.split(" ", pure=True)
    assert first.key == second.key
    assert "pure" not in first.kwargs
    assert first.compute(executor="sync") == ["a", "b"]
    assert text.split(" ").key != text.split(" ").key
    maker = fd.value(lambda y: y * 3)
    assert maker(5, pure=True).key == maker(5, pure=True).key
    assert maker(5, pure=True).compute(executor="sync") == 15


def test_value_options():
    assert fd.value([1, 2], pure=True).key == fd.value([1, 2], pure=True).key
    assert fd.value([1, 2], pure=True).key != fd.value([1, 3], pure=True).key
    first, second = fd.value(("a", "b"), name="pair", nout=2)
    assert fd.compute(first, second, executor="sync") == ("a", "b")
    with pytest.raises(ValueError, match=r"value: nout=3 but the value has 2 items; give "
                                         r"nout=2, or leave it out"):
        fd.value(("a", "b"), nout=3)
    with pytest.raises(ValueError, match=r"value: nout= expected a whole number >= 0, got -1"):
        fd.value(("a", "b"), nout=-1)
    a = inc(1)
    opaque = fd.value([a], traverse=False)
    assert opaque.dependencies == ()
    assert fd.op(lambda items: items[0].key)(opaque).compute(executor="sync") == a.key


@pytest.mark.parametrize("executor", ["threads", "processes"])
def test_an_opaque_value_travels_with_its_nodes(executor):
    a = inc(1)
    keys = fd.op(lambda items: [item.key for item in items], name="keys")
    assert fd.compute(keys(fd.value([a], traverse=False)), executor=executor) == ([a.key],)
    # returned by an op, nodes expand (an op may return nodes); as a data node they stay data
    passed = fd.op(lambda items: fd.value(items, traverse=False), name="passed")
    assert fd.compute(passed(fd.value([a], traverse=False)), executor=executor) == ([a],)


def test_the_pure_setting_is_the_default_purity():
    with fd.config.set(pure=True):
        assert inc(5).key == inc(5).key
        assert fd.value(3).key == fd.value(3).key
        assert fd.op(lambda x: x, pure=False)(1).key != fd.op(lambda x: x, pure=False)(1).key
    assert inc(5).key != inc(5).key
    assert fd.value(3).key != fd.value(3).key
