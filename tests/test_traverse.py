"""Argument traversal: finding references in nested arguments and swapping in values."""

import collections
import dataclasses
import pickle

import pytest

from flowdispatch.core.traverse import (HasIterator, Ref, materialize, nesting_error, scan, substitute,
                                   template)

a, b = Ref("a-1"), Ref("b-2")
VALUES = {"a-1": 10, "b-2": 20}
Point = collections.namedtuple("Point", "x y")


@dataclasses.dataclass
class Box:
    item: object
    label: str = "box"


@dataclasses.dataclass(frozen=True)
class Frozen:
    item: object


def test_a_ref_is_a_key():
    assert a.key == "a-1"
    assert repr(a) == "Ref('a-1')"
    assert pickle.loads(pickle.dumps(a)).key == "a-1"


@pytest.mark.parametrize("obj, keys", [
    (a, ["a-1"]),
    ([1, {"x": a}, (b, 3)], ["a-1", "b-2"]),
    ({"k": {"deeper": [[b]]}}, ["b-2"]),
    ({a}, ["a-1"]),
    (frozenset({b}), ["b-2"]),
    (Point(a, [b]), ["a-1", "b-2"]),
    (Box(b), ["b-2"]),
    (Frozen([a]), ["a-1"]),
    ([b, a, b], ["b-2", "a-1"]),
])
def test_scan_finds_references(obj, keys):
    found = {}
    assert scan(obj, found) is True
    assert list(found) == keys


@pytest.mark.parametrize("obj", [1, "a-1", None, [1, 2], {"a-1": 1}, (), object(), Box(1), Box])
def test_scan_finds_nothing(obj):
    found = {}
    assert scan(obj, found) is False
    assert found == {}


def test_substitute_replaces_references():
    assert substitute([1, {"x": a}, (b, 3)], VALUES) == [1, {"x": 10}, (20, 3)]
    assert substitute(a, VALUES) == 10
    assert substitute({a, 3}, VALUES) == {10, 3}
    assert substitute(frozenset({b}), VALUES) == frozenset({20})


def test_substitute_keeps_container_types():
    point = substitute(Point(a, 1), VALUES)
    assert (type(point), point) == (Point, Point(10, 1))
    ordered = substitute(collections.OrderedDict(x=a), VALUES)
    assert (type(ordered), ordered) == (collections.OrderedDict, {"x": 10})
    default = substitute(collections.defaultdict(list, x=b), VALUES)
    assert (type(default), default.default_factory, dict(default)) == (
        collections.defaultdict, list, {"x": 20})


def test_substitute_rebuilds_dataclasses_without_changing_the_original():
    box = Box(a, label="mine")
    new = substitute(box, VALUES)
    assert new == Box(10, "mine") and box.item is a
    frozen = substitute(Frozen([b]), VALUES)
    assert frozen == Frozen([20])


def test_substitute_returns_containers_without_references_as_they_are():
    data = [1, {"x": [2, 3]}, (4,)]
    assert substitute(data, VALUES) is data
    box = Box([1])
    assert substitute(box, VALUES) is box
    mixed = [data, a]
    assert substitute(mixed, VALUES)[0] is data


def test_substitute_needs_every_value():
    with pytest.raises(KeyError, match="a-1"):
        substitute([a], {})


def test_template_turns_nodes_into_bare_refs():
    import flowdispatch as fd

    node = fd.value(1)
    flat = template([node, {"k": (node, 2)}])
    assert type(flat[0]) is Ref and flat[0].key == node.key
    assert type(flat[1]["k"][0]) is Ref
    assert template([a])[0] is a
    plain = [1, 2]
    assert template(plain) is plain


@dataclasses.dataclass
class Later:
    item: object
    derived: int = dataclasses.field(init=False)


def test_dataclass_fields_that_are_not_set_are_skipped():
    unset = Later(a)
    found = {}
    assert scan(unset, found) is True and list(found) == ["a-1"]
    swapped = substitute(unset, VALUES)
    assert swapped.item == 10 and not hasattr(swapped, "derived")
    assert template(unset) is unset


def test_slices_are_traversed():
    found = {}
    assert scan(slice(a, None, b), found) is True and list(found) == ["a-1", "b-2"]
    assert substitute(slice(None, a), VALUES) == slice(None, 10)
    plain = slice(1, 2)
    assert substitute(plain, VALUES) is plain


def test_scan_refuses_an_iterator_and_materialize_makes_it_a_list():
    with pytest.raises(HasIterator):
        scan([1, iter([a])], {})
    assert materialize((iter([a, 1]), {"k": (x for x in [b])})) == ([a, 1], {"k": [b]})
    assert materialize(iter([iter([a])])) == [[a]]
    same = [1, {"k": (a,)}]
    assert materialize(same) is same


def test_an_open_file_is_not_an_iterator_to_materialize(tmp_path):
    path = tmp_path / "lines.txt"
    path.write_text("one\ntwo\n")
    with open(path) as handle:
        assert materialize([handle])[0] is handle
        assert scan(handle, {}) is False


def test_nesting_error_tells_a_cycle_from_depth():
    loop = [1]
    loop.append({"again": loop})
    message = str(nesting_error(loop, "argument 0 of 'f'"))
    assert message.startswith("argument 0 of 'f' contains itself (a list inside itself)")
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    message = str(nesting_error(deep, "argument 'x' of 'f'"))
    assert message.startswith("argument 'x' of 'f' is nested too deeply")
