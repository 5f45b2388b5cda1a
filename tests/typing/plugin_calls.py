"""Op calls as the mypy plugin ``flowdispatch.mypy`` checks them.

``tests/test_typing.py`` runs ``mypy --strict`` with the plugin on this program:
each line whose comment starts with ``E:`` must get exactly the error that
follows, and no other line any. (It is not meant to run: the wrong calls fail when made.)
"""

from __future__ import annotations

from typing import Any, TypeVar, assert_type

import flowdispatch as fd
from flowdispatch import Node

T = TypeVar("T")


@fd.op
def parse(text: str) -> int:
    return int(text)


@fd.op(retries=1)
def total(xs: list[int], *, start: int = 0) -> int:
    return sum(xs, start)


@fd.op
def first(items: list[T]) -> T:
    return items[0]


class Model:
    @fd.op
    def predict(self, x: float) -> str:
        return str(x)


word = fd.value("3")
number = fd.value(3)
numbers = [number, parse("4")]

# -- accepted: values, nodes of them, nodes inside containers ------------------------
assert_type(parse("3"), Node[int])
assert_type(parse(word), Node[int])
assert_type(parse(text=word), Node[int])
assert_type(total([number, 2], start=number), Node[int])
assert_type(total(numbers), Node[int])
assert_type(total(fd.value([1, 2])), Node[int])
assert_type(first([word]), Node[str])  # a generic op's result is inferred
assert_type(first(fd.value([1.5])), Node[float])
assert_type(Model().predict(number), Node[str])  # a Node[int] for a float
assert_type(fd.op(sum)(numbers), Node[Any])  # overloaded: not checked
assert_type(parse.options(retries=2)(word), Node[int])
assert_type(parse.map(["1", word]), list[Node[int]])  # op.map: each element is checked
assert_type(total.map([[1], numbers], start=fd.unmapped(number)), list[Node[int]])
assert_type(first.map([[1.5], [2.5]]), list[Node[float]])
assert_type(parse.map(fd.value(["1", "2"])), Node[list[int]])  # a lazy map: each element of
assert_type(first.map(fd.value([[1.5], [2.5]])), Node[list[float]])  # the node's value
assert_type(total.map(fd.value([[1], [2]]), start=fd.unmapped(number)), Node[list[int]])

# -- flagged -----------------------------------------------------------------------
parse(3)  # E: Argument 1 to "parse" has incompatible type "int"; expected "str | Node[str]"  [arg-type]
parse(number)  # E: Argument 1 to "parse" has incompatible type "Node[int]"; expected "str | Node[str]"  [arg-type]
parse()  # E: Missing positional argument "text" in call to "parse"  [call-arg]
parse("3", "4")  # E: Too many arguments for "parse"  [call-arg]
parse(txt="3")  # E: Unexpected keyword argument "txt" for "parse"; did you mean "text"?  [call-arg]
total([word])  # E: List item 0 has incompatible type "str"; expected "int"  [list-item]
total([word for _ in "ab"])  # E: Argument 1 to "total" has incompatible type "list[str]"; expected "list[int] | Node[list[int]]"  [arg-type]
total(numbers, 0)  # E: Too many positional arguments for "total"  [call-arg]
total(numbers, start="0")  # E: Argument "start" to "total" has incompatible type "str"; expected "int | Node[int]"  [arg-type]
Model().predict(word)  # E: Argument 1 to "predict" has incompatible type "Node[str]"; expected "float | Node[float]"  [arg-type]
parse.map(["1", 2])  # E: Argument 1 to "parse" has incompatible type "int"; expected "str | Node[str]"  [arg-type]
parse.map(range(3))  # E: Argument 1 to "parse" has incompatible type "int"; expected "str | Node[str]"  [arg-type]
parse.map(fd.value([1, 2]))  # E: Argument 1 to "parse" has incompatible type "int"; expected "str | Node[str]"  [arg-type]
total.map([numbers], start=fd.unmapped("0"))  # E: Argument "start" to "total" has incompatible type "str"; expected "int | Node[int]"  [arg-type]
fd.op(retries="3")(parse.fn)  # E: No overload variant of "op" matches argument type "str"  [call-overload]
fd.op(retry=3)  # E: Unexpected keyword argument "retry" for overloaded function "op"; did you mean "retry_on"?  [call-overload]
parse.options(retries=2)(3)  # E: Argument 1 has incompatible type "int"; expected "str | Node[str]"  [arg-type]
