"""Nodes: immutable lazy values, and walking from nodes to their ancestors.

A :class:`Node` holds a callable, its arguments and the nodes those arguments
contain (its dependencies); nothing runs until it is computed. Item access,
attribute access, method calls and operators on a node build new nodes, as in
``dask.delayed``; ``==`` and ``hash`` compare keys, so nodes serve as dict keys.

Examples
--------
>>> import flowdispatch as fd
>>> x = fd.value({"a": [1, 2, 3]}, name="data")
>>> total = x["a"][0] + 10
>>> total.compute(executor="sync")
11
>>> bool(total)
Traceback (most recent call last):
...
TypeError: the truth value of node ... is not known until it runs: compute it first (node.compute()), or branch inside an op
"""

from __future__ import annotations

import operator
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from . import keys
from .gcpause import paused_gc
from .traverse import HasIterator, Ref, materialize, nesting_error, scan, template

if TYPE_CHECKING:
    import graphviz

    from .op import Op

__all__ = ["Node", "ancestors", "collect", "make_node", "value"]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
_K = TypeVar("_K")
_V = TypeVar("_V")

_OWN_NAMES = frozenset(
    {"key", "name", "op", "args", "kwargs", "dependencies", "compute", "persist",
     "visualize", "dask"}
)


class Node(Ref, Generic[T_co]):
    """A lazy value: the result of one op call, or a literal input.

    Build nodes by calling ops (see :func:`~flowdispatch.op`), or with
    :func:`value` and :func:`collect`. ``Node[T]`` is a node whose value is a
    ``T``; it is covariant (a ``Node[int]`` is a ``Node[float]``).
    """

    # _deep: whether nodes are nested inside the arguments (None: the arguments
    # are opaque data, not looked into: fd.value(..., traverse=False))
    __slots__ = ("_op", "_fn", "_args", "_kwargs", "_deps", "_deep", "_nout")
    if TYPE_CHECKING:  # the slots (class annotations would shadow lazy attributes)
        _key: str
        _op: Op[..., Any] | None
        _fn: Callable[..., Any] | None
        _args: tuple[Any, ...]
        _kwargs: dict[str, Any] | None
        _deps: tuple[Node[Any], ...]
        _deep: bool
        _nout: int | None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"a Node is immutable: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"a Node is immutable: cannot delete {name!r}")

    # -- what it is ----------------------------------------------------------------
    @property
    def name(self) -> str:
        """The op's name (the key's prefix)."""
        return self._key.rsplit("-", 1)[0]

    @property
    def op(self) -> Op[..., Any] | None:
        """The op that computes this node (``None`` for a data node)."""
        return self._op

    @property
    def args(self) -> tuple[Any, ...]:
        """The positional arguments, nodes included."""
        return self._args

    @property
    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments, nodes included (a copy)."""
        return dict(self._kwargs) if self._kwargs else {}

    @property
    def dependencies(self) -> tuple[Node[Any], ...]:
        """The nodes this one needs directly, in the order they appear."""
        return self._deps

    def __repr__(self) -> str:
        return f"Node({self._key!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Node):
            return self._key == other._key
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        if isinstance(other, Node):
            return self._key != other._key
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._key)

    def __copy__(self) -> Node[T_co]:
        return self

    def __reduce__(self) -> tuple[Callable[..., Node[Any]], tuple[Any, ...]]:
        if not self._deps:  # a leaf (an op's expansion returns thousands): built as it was
            return (_leaf, (self._key, self._op, self._args, self._kwargs, self._nout,
                            self._deep))
        # Flat: one record per ancestor, never a linked structure (which would
        # recurse once per link when pickled).
        records = [
            (n._key, n._op, template(n._args) if n._deps else n._args,
             template(n._kwargs) if n._deps else n._kwargs, n._nout, n._deep is None)
            for n in ancestors([self]).values()
        ]
        return (_unflatten, (records,))

    # -- running and looking -------------------------------------------------------
    def compute(self, executor: Any = None, **kwargs: Any) -> T_co:
        """Run this node and its ancestors; return its value.

        See :func:`flowdispatch.compute` for the keyword arguments.
        """
        from ..api import compute

        value: T_co = compute(self, executor=executor, **kwargs)[0]
        return value

    def persist(self, executor: Any, **kwargs: Any) -> Any:
        """Lower to dask futures that stay on the cluster (see :func:`flowdispatch.persist`)."""
        from ..api import persist

        return persist(self, executor=executor, **kwargs)[self]

    def visualize(self, filename: str | None = None, format: str | None = None,
                  **kwargs: Any) -> graphviz.Digraph:
        """Render this node and its ancestors (see :func:`flowdispatch.visualize`)."""
        from ..view.render import visualize

        return visualize(self, filename=filename, format=format, **kwargs)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        from ..view.render import visualize

        bundle: dict[str, Any] = visualize(self)._repr_mimebundle_(include, exclude)
        return bundle

    # -- dask collection protocol --------------------------------------------------
    def __dask_graph__(self) -> dict[str, Any]:
        from .graph import Graph

        return Graph(self).to_dask()

    def __dask_keys__(self) -> list[str]:
        return [self._key]

    def __dask_layers__(self) -> tuple[str, ...]:
        return (self._key,)

    def __dask_postcompute__(self) -> tuple[Callable[[Any], Any], tuple[()]]:
        return _first, ()

    def __dask_postpersist__(self) -> tuple[Callable[[Any, str], Node[Any]], tuple[str]]:
        return _from_persisted, (self._key,)

    def __dask_tokenize__(self) -> str:
        return self._key

    __dask_optimize__ = None  # no graph optimization; dask warns when this is missing

    @staticmethod
    def __dask_scheduler__(dsk: Any, keys: Any, **kwargs: Any) -> Any:
        import dask.threaded

        return dask.threaded.get(dsk, keys, **kwargs)

    @property
    def dask(self) -> dict[str, Any]:
        """The dask graph of this node (``__dask_graph__``)."""
        return self.__dask_graph__()

    # -- laziness: honest about what is unknown ------------------------------------
    def __bool__(self) -> bool:
        fn = self._fn
        if fn in _COMPARISONS and self._op is not None and len(self._args) == 2:
            left, right = (_short_repr(arg) for arg in self._args)
            raise TypeError(
                f"{left} {_COMPARISONS[fn]} {right} compares a lazy node, so its truth is "
                "not known until it runs: max(), min(), sorted() and if need values. "
                "Compute first (node.compute()), or do it inside an op "
                "(e.g. fd.op(max)([a, b]))")
        raise TypeError(
            f"the truth value of node {self._key!r} is not known until it runs: "
            "compute it first (node.compute()), or branch inside an op"
        )

    def __len__(self) -> int:
        if self._nout is None:
            raise TypeError(
                f"the length of node {self._key!r} is not known until it runs: give its "
                "op nout=N (or a '-> tuple[A, B]' return annotation) to unpack it, or "
                "index it lazily with node[i]"
            )
        return self._nout

    def __iter__(self) -> Iterator[Node[Any]]:
        return iter([self[i] for i in range(len(self))])  # len() raises now, not on next()

    @overload
    def __getitem__(self: Node[Mapping[_K, _V]], index: _K) -> Node[_V]: ...
    @overload
    def __getitem__(self: Node[Sequence[_V]], index: int) -> Node[_V]: ...
    @overload
    def __getitem__(self, index: Any) -> Node[Any]: ...
    def __getitem__(self, index: Any) -> Node[Any]:
        if self._nout is not None and isinstance(index, int) and not -self._nout <= index < self._nout:
            raise IndexError(f"node {self._key!r} has nout={self._nout}; index {index} is out of range")
        return _helper(operator.getitem, "getitem", pure=True)(self, index)

    def __getattr__(self, name: str) -> Node[Any]:
        if name.startswith("_") or name in _OWN_NAMES:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        _warn_if_misspelt(name)
        return _helper(getattr, "getattr", pure=True)(self, name)

    def __call__(self, *args: Any, pure: bool | None = None, **kwargs: Any) -> Node[Any]:
        """A lazy call; ``pure=True`` gives it a deterministic key (as in dask), and is
        not passed on to the call."""
        if self._fn is getattr and self._op is not None and len(self._args) == 2:
            obj, method = self._args  # node.attr(...): one node named after the method
            return _helper(_call_method, keys.clean_name(method))._node(
                (obj, method, *args), kwargs, pure)
        return _helper(_call, "call")._node((self, *args), kwargs, pure)

    # -- numbers: a node has none until it runs -------------------------------------
    def _no_number(self, kind: str) -> TypeError:
        return TypeError(
            f"node {self._key!r} is lazy: it has no {kind} value until it runs. Call "
            f"functions such as math.sqrt inside an op (fd.op(math.sqrt)(node)), or "
            "compute it first (node.compute())")

    def __float__(self) -> float:
        raise self._no_number("float")

    def __int__(self) -> int:
        raise self._no_number("int")

    def __index__(self) -> int:
        raise self._no_number("integer")

    def __complex__(self) -> complex:
        raise self._no_number("complex")

    if TYPE_CHECKING:  # the lazy operators, set on the class after it
        def __add__(self, other: Any) -> Node[Any]: ...
        def __radd__(self, other: Any) -> Node[Any]: ...
        def __sub__(self, other: Any) -> Node[Any]: ...
        def __rsub__(self, other: Any) -> Node[Any]: ...
        def __mul__(self, other: Any) -> Node[Any]: ...
        def __rmul__(self, other: Any) -> Node[Any]: ...
        def __matmul__(self, other: Any) -> Node[Any]: ...
        def __rmatmul__(self, other: Any) -> Node[Any]: ...
        def __truediv__(self, other: Any) -> Node[Any]: ...
        def __rtruediv__(self, other: Any) -> Node[Any]: ...
        def __floordiv__(self, other: Any) -> Node[Any]: ...
        def __rfloordiv__(self, other: Any) -> Node[Any]: ...
        def __mod__(self, other: Any) -> Node[Any]: ...
        def __rmod__(self, other: Any) -> Node[Any]: ...
        def __pow__(self, other: Any) -> Node[Any]: ...
        def __rpow__(self, other: Any) -> Node[Any]: ...
        def __lshift__(self, other: Any) -> Node[Any]: ...
        def __rlshift__(self, other: Any) -> Node[Any]: ...
        def __rshift__(self, other: Any) -> Node[Any]: ...
        def __rrshift__(self, other: Any) -> Node[Any]: ...
        def __and__(self, other: Any) -> Node[Any]: ...
        def __rand__(self, other: Any) -> Node[Any]: ...
        def __xor__(self, other: Any) -> Node[Any]: ...
        def __rxor__(self, other: Any) -> Node[Any]: ...
        def __or__(self, other: Any) -> Node[Any]: ...
        def __ror__(self, other: Any) -> Node[Any]: ...
        def __lt__(self, other: Any) -> Node[Any]: ...
        def __le__(self, other: Any) -> Node[Any]: ...
        def __gt__(self, other: Any) -> Node[Any]: ...
        def __ge__(self, other: Any) -> Node[Any]: ...
        def __neg__(self) -> Node[Any]: ...
        def __pos__(self) -> Node[Any]: ...
        def __abs__(self) -> Node[Any]: ...
        def __invert__(self) -> Node[Any]: ...


_COMPARISONS = {operator.lt: "<", operator.le: "<=", operator.gt: ">", operator.ge: ">="}
_METHODS = ("compute", "persist", "visualize", "dependencies")


def _short_repr(obj: Any) -> str:
    text = repr(obj)
    return text if len(text) <= 40 else text[:37] + "..."


def _one_edit(a: str, b: str) -> bool:
    """Whether ``a`` and ``b`` differ by one insertion, deletion, substitution or swap."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) > len(b):
        a, b = b, a
    i = 0
    while i < len(a) and a[i] == b[i]:
        i += 1
    if len(a) < len(b):
        return a[i:] == b[i + 1:]
    return a[i + 1:] == b[i + 1:] or (a[i + 2:] == b[i + 2:] and a[i:i + 2] == b[i + 1::-1][:2])


def _warn_if_misspelt(name: str) -> None:
    for method in _METHODS:
        if _one_edit(name, method):
            call = "" if method == "dependencies" else "()"
            warnings.warn(
                f"node.{name} is a lazy attribute of the node's value, not a method of the "
                f"node: did you mean node.{method}{call}?", UserWarning, stacklevel=3)

def _first(results: Any) -> Any:
    return results[0]


def _from_persisted(dsk: Any, key: str) -> Node[Any]:
    return value(dsk[key], name=key.rsplit("-", 1)[0])


def _call_method(obj: Any, method: str, *args: Any, **kwargs: Any) -> Any:
    return getattr(obj, method)(*args, **kwargs)


def _call(f: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return f(*args, **kwargs)


def _identity(x: Any) -> Any:
    return x


def _collect(*items: Any) -> list[Any]:
    return list(items)


_helpers: dict[tuple[Any, ...], Op[..., Any]] = {}


def _helper(fn: Callable[..., Any], name: str, pure: bool | None = None) -> Op[..., Any]:
    """The internal op behind a lazy operator (made once, then reused)."""
    found = _helpers.get((fn, name, pure))
    if found is None:
        from .op import op

        found = _helpers[(fn, name, pure)] = op(fn, name=name, pure=pure)
    return found


def _unary(fn: Callable[..., Any], name: str) -> Callable[[Node[Any]], Node[Any]]:
    def method(self: Node[Any]) -> Node[Any]:
        return _helper(fn, name, pure=True)(self)

    method.__name__ = f"__{name}__"
    return method


def _binary(fn: Callable[..., Any], name: str,
            reflected: bool = False) -> Callable[[Node[Any], Any], Node[Any]]:
    def method(self: Node[Any], other: Any) -> Node[Any]:
        if reflected:
            return _helper(fn, name, pure=True)(other, self)
        return _helper(fn, name, pure=True)(self, other)

    method.__name__ = f"__{'r' if reflected else ''}{name}__"
    return method


for _name in ("add", "sub", "mul", "matmul", "truediv", "floordiv", "mod", "pow",
              "lshift", "rshift", "and", "xor", "or"):
    _fn = getattr(operator, f"{_name}_" if _name in ("and", "or") else _name)
    setattr(Node, f"__{_name}__", _binary(_fn, _name))
    setattr(Node, f"__r{_name}__", _binary(_fn, _name, reflected=True))
for _name in ("lt", "le", "gt", "ge"):
    setattr(Node, f"__{_name}__", _binary(getattr(operator, _name), _name))
for _name in ("neg", "pos", "abs", "invert"):
    setattr(Node, f"__{_name}__", _unary(getattr(operator, _name), _name))
del _name, _fn

_new = object.__new__
_set = {name: getattr(Node, name).__set__ for name in Node.__slots__}
_set_key: Callable[[Ref, str], None] = getattr(Ref, "_key").__set__  # the slot's setter
_set_op, _set_fn, _set_args = _set["_op"], _set["_fn"], _set["_args"]
_set_kwargs, _set_deps, _set_deep, _set_nout = (
    _set["_kwargs"], _set["_deps"], _set["_deep"], _set["_nout"])


def make_node(key: str, op: Op[..., Any] | None, fn: Callable[..., Any] | None,
              args: tuple[Any, ...], kwargs: dict[str, Any] | None,
              nout: int | None, traverse: bool = True) -> Node[Any]:
    """Build a node, finding the nodes inside its arguments (its dependencies).

    Iterators and generators among the arguments are made lists first. With
    ``traverse=False`` (a data node only) the arguments are not looked into.
    """
    found: dict[str, Ref] = {}
    deep: bool | None = None  # not looked into
    if traverse:
        try:
            deep = _scan_call(args, kwargs, found)
        except HasIterator:
            args, kwargs = materialize(args), materialize(kwargs)
            found.clear()
            deep = _scan_call(args, kwargs, found)
        except RecursionError:
            raise _nesting_error(key, args, kwargs) from None
    if deep:  # a nested Ref that is not a node (direct arguments were checked already)
        for ref in found.values():
            if not isinstance(ref, Node):
                raise TypeError(f"{ref!r} is a bare reference, not a node: pass the node itself")
    return _built(key, op, fn, args, kwargs or None, tuple(found.values()), deep, nout)


def _built(key: str, op: Op[..., Any] | None, fn: Callable[..., Any] | None,
           args: tuple[Any, ...], kwargs: dict[str, Any] | None, deps: tuple[Ref, ...],
           deep: bool | None, nout: int | None) -> Node[Any]:
    """A node with these slots (an op's node calls its function checked for ``nout``)."""
    if op is not None and nout is not None:
        fn = op._checked(fn, nout)  # type: ignore[arg-type]  # an op's node has its function
    node = _new(Node)
    _set_key(node, key)
    _set_op(node, op)
    _set_fn(node, fn)
    _set_args(node, args)
    _set_kwargs(node, kwargs)
    _set_deps(node, deps)
    _set_deep(node, deep)
    _set_nout(node, nout)
    return node


def _scan_call(args: tuple[Any, ...], kwargs: dict[str, Any] | None, found: dict[str, Ref]) -> bool:
    """Add the nodes in a call's arguments to ``found``; True if some are nested."""
    deep = False
    for arg in args:
        if isinstance(arg, Node):
            found.setdefault(arg._key, arg)
        elif type(arg) not in _ATOMS and scan(arg, found):
            deep = True
    if kwargs:
        for arg in kwargs.values():
            if isinstance(arg, Node):
                found.setdefault(arg._key, arg)
            elif type(arg) not in _ATOMS and scan(arg, found):
                deep = True
    return deep


def _nesting_error(key: str, args: tuple[Any, ...], kwargs: dict[str, Any] | None) -> ValueError:
    """The error for the first argument too deep to look into (see :func:`nesting_error`)."""
    for where, arg in [*enumerate(args), *(kwargs or {}).items()]:
        try:
            scan(arg, {})
        except RecursionError:
            what = f"argument {where}" if isinstance(where, int) else f"argument {where!r}"
            return nesting_error(arg, f"{what} of {key.rsplit('-', 1)[0]!r}")
    return nesting_error(args, f"the arguments of {key.rsplit('-', 1)[0]!r}")


_ATOMS = frozenset({int, float, str, bytes, bool, type(None), complex})


def value(obj: T, name: str | None = None, pure: bool | None = None,
          nout: int | None = None, traverse: bool = True) -> Node[T]:
    """A data node: a literal input, shown in the graph as an ellipse.

    Parameters
    ----------
    obj
        The value. Nodes inside it (in lists, dicts, ...) become dependencies
        and are replaced by their values, as in an op's arguments.
    name
        The name of the node (default ``"value"``); its key starts with it.
    pure
        ``True``: the key follows ``obj`` (dask's ``tokenize``), so the same
        data gives the same node. ``None`` follows ``fd.config.set(pure=...)``.
    nout
        The length of ``obj``, so that the node can be unpacked (``a, b = node``).
    traverse
        ``False`` passes ``obj`` as it is, nodes inside it included, as opaque data.

    Examples
    --------
    >>> import flowdispatch as fd
    >>> rows = fd.value([3, 1, 2], name="rows")
    >>> rows.name
    'rows'
    >>> fd.op(sorted)(rows).compute(executor="sync")
    [1, 2, 3]
    >>> first, second = fd.value(("a", "b"), nout=2)
    >>> fd.value([1, 2], pure=True).key == fd.value([1, 2], pure=True).key
    True
    """
    label = keys.clean_name(name) if name else "value"
    if traverse:
        obj = materialize(obj)
    if nout is not None:
        _check_value_nout(obj, nout)
    if pure is None:
        from .. import config

        pure = config.pure()
    key = keys.pure_key(label, obj) if pure else keys.unique_key(label)
    return make_node(key, None, None, (obj,), None, nout, traverse=traverse)


def _check_value_nout(obj: Any, nout: int) -> None:
    if not isinstance(nout, int) or isinstance(nout, bool):
        raise TypeError(f"value: nout= expected a whole number >= 0, got {nout!r}")
    if nout < 0:
        raise ValueError(f"value: nout= expected a whole number >= 0, got {nout!r}")
    try:
        length = len(obj)
    except TypeError:
        raise TypeError(f"value: nout={nout} needs a value with a length, got "
                        f"{type(obj).__name__}") from None
    if length != nout:
        raise ValueError(f"value: nout={nout} but the value has {length} items; "
                         f"give nout={length}, or leave it out")


@overload
def collect(nodes: Iterable[Node[T]], name: str | None = None) -> Node[list[T]]: ...
@overload
def collect(nodes: Iterable[Any], name: str | None = None) -> Node[list[Any]]: ...
def collect(nodes: Iterable[Any], name: str | None = None) -> Node[list[Any]]:
    """One node whose value is the list of the given nodes' values.

    Examples
    --------
    >>> import flowdispatch as fd
    >>> inc = fd.op(lambda x: x + 1)
    >>> fd.collect([inc(1), inc(2)]).compute(executor="sync")
    [2, 3]
    """
    items = tuple(nodes)
    label = keys.clean_name(name) if name else "collect"
    return make_node(keys.unique_key(label), _helper(_collect, "collect"), _collect,
                     items, None, None)


def ancestors(targets: Iterable[Node[Any]],
              inputs: AbstractSet[str] = frozenset()) -> dict[str, Node[Any]]:
    """The targets and all their ancestors, in topological order (dependencies first).

    The walk does not go past nodes whose keys are in ``inputs``. It is
    iterative, so a chain of a million nodes needs no deep recursion.
    """
    order: dict[str, Node[Any]] = {}
    for target in targets:
        if target._key in order:
            continue
        stack = [(target, iter(() if target._key in inputs else target._deps))]
        while stack:
            node, deps = stack[-1]
            for dep in deps:
                if dep._key not in order:
                    stack.append((dep, iter(() if dep._key in inputs else dep._deps)))
                    break
            else:
                stack.pop()
                order.setdefault(node._key, node)
    return order


def _leaf(key: str, op: Op[..., Any] | None, args: tuple[Any, ...],
          kwargs: dict[str, Any] | None, nout: int | None, deep: bool | None) -> Node[Any]:
    """A node with no dependencies, unpickled (see :meth:`Node.__reduce__`): its
    arguments hold no node, so they need no looking into."""
    return _built(key, op, None if op is None else op.__wrapped__, args, kwargs, (), deep, nout)


class _Leaves:
    """A list of leaf nodes of one op (a lazy map's children), pickled as columns: the
    op once, then the keys and the arguments, which pickle and unpickle in bulk.
    Unpickled, it is the list of nodes again. See :func:`as_columns`."""

    __slots__ = ("nodes",)

    def __init__(self, nodes: list[Node[Any]]):
        self.nodes = nodes

    def __reduce__(self) -> tuple[Callable[..., list[Node[Any]]], tuple[Any, ...]]:
        nodes = self.nodes
        first = nodes[0]
        return (_leaves, (first._op, first._nout, first._deep, [n._key for n in nodes],
                          [n._args for n in nodes], [n._kwargs for n in nodes]))


def as_columns(value: Any) -> Any:
    """``value``, to pickle: a list of leaf nodes of one op pickles as columns (about
    ten times faster both ways than node by node); anything else as it is.

    Examples
    --------
    >>> import pickle
    >>> import flowdispatch as fd
    >>> nodes = fd.op(abs).map([1, -2, 3])
    >>> pickle.loads(pickle.dumps(as_columns(nodes))) == nodes
    True
    >>> as_columns([1, 2])
    [1, 2]
    """
    if type(value) is not list or not value:
        return value
    first = value[0]
    if type(first) is not Node:
        return value
    op, nout, deep = first._op, first._nout, first._deep
    for node in value:
        if (type(node) is not Node or node._deps or node._op is not op
                or node._nout != nout or node._deep is not deep):
            return value
    return _Leaves(value)


def _leaves(op: Op[..., Any] | None, nout: int | None, deep: bool | None, keys: list[str],
            args: list[tuple[Any, ...]], kwargs: list[dict[str, Any] | None]
            ) -> list[Node[Any]]:
    """The nodes pickled as columns (see :class:`_Leaves`)."""
    fn = None if op is None else op.__wrapped__
    with paused_gc():
        return [_built(key, op, fn, a, kw, (), deep, nout)
                for key, a, kw in zip(keys, args, kwargs)]


def _unflatten(records: list[Any]) -> Node[Any]:
    from .traverse import substitute

    built: dict[str, Node[Any]] = {}
    for key, op, args, kwargs, nout, opaque in records:
        fn = None if op is None else op.__wrapped__
        if not opaque:
            args, kwargs = substitute(args, built), substitute(kwargs, built) if kwargs else None
        built[key] = make_node(key, op, fn, args, kwargs, nout, traverse=not opaque)
    return built[records[-1][0]]
