"""``@op``: turn a function into one whose calls build lazy nodes.

An :class:`Op` is a ``wrapt`` function wrapper, so the signature, ``__doc__``,
``__name__``, ``help()`` and ``inspect`` of the wrapped function are kept. Its
options live in an immutable :class:`OpSettings`, validated when the decorator
is applied. Calling an op binds the arguments against the signature at once, so
a wrong call fails on the line that made it, and returns a :class:`~flowdispatch.Node`.

Examples
--------
>>> import flowdispatch as fd
>>> @fd.op
... def add(x, y=1):
...     "Add two numbers."
...     return x + y
>>> node = add(2, y=3)
>>> node.compute(executor="sync")
5
>>> add.fn(2, 3)
5
>>> add.__doc__
'Add two numbers.'
>>> add.options(retries=2).settings.retries
2
>>> add(1, 2, 3)
Traceback (most recent call last):
...
TypeError: add(x, y=1) got arguments that do not fit its signature: too many positional arguments. Call it as you would call the plain function.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
import typing
from collections.abc import Callable, Iterable
from itertools import repeat
from typing import (
    TYPE_CHECKING,
    Any,
    Generic,
    ParamSpec,
    Protocol,
    TypedDict,
    TypeVar,
    overload,
)

import dask.config
import wrapt

from ..errors import NoutError
from . import keys
from .gcpause import paused_gc
from .node import Node, make_node
from .traverse import Ref, materialize

if TYPE_CHECKING:
    from typing import Concatenate, Unpack

__all__ = ["Checked", "Op", "OpSettings", "op", "unmapped"]

P = ParamSpec("P")
R = TypeVar("R")
_P2 = ParamSpec("_P2")
_R2 = TypeVar("_R2")
_S = TypeVar("_S")
_T = TypeVar("_T")
#: dask's settings: one dict, which dask.config.set and refresh change in place.
_DASK_CONFIG: dict[str, Any] = dask.config.config

_RetryOn = typing.Union[
    type[BaseException], tuple[type[BaseException], ...], Callable[[BaseException], bool]
]


def _is_exception_type(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, BaseException)


@dataclasses.dataclass(frozen=True)
class OpSettings:
    """The options of an op; see :func:`op` for what each one means."""

    name: str | None = None
    nout: int | None = None
    pure: bool | None = None
    retries: int = 0
    retry_on: _RetryOn = Exception
    retry_delay: float = 0.0
    backoff: float = 1.0
    max_delay: float | None = None
    timeout: float | None = None
    cache: bool = False
    version: str | None = None
    resources: dict[str, float] | None = None
    priority: int = 0
    workers: Any = None
    allow_other_workers: bool = False
    tags: tuple[str, ...] = ()
    quick: bool | None = None

    def __post_init__(self) -> None:
        def bad(option: str, expected: str, got: Any,
                kind: type[Exception] = TypeError) -> Exception:
            return kind(f"op option {option}= expected {expected}, got {got!r}")

        def number(value: Any) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool)

        if self.name is not None and not isinstance(self.name, str):
            raise bad("name", "a non-empty string", self.name)
        if self.name == "":
            raise bad("name", "a non-empty string", self.name, ValueError)
        for option in ("nout", "retries"):
            value = getattr(self, option)
            if value is None and option == "nout":
                continue
            if not isinstance(value, int) or isinstance(value, bool):
                raise bad(option, "a whole number >= 0", value)
            if value < 0:
                raise bad(option, "a whole number >= 0", value, ValueError)
        for option in ("retry_delay", "max_delay", "timeout"):
            value = getattr(self, option)
            if value is None and option != "retry_delay":
                continue
            if not number(value):
                raise bad(option, "a number of seconds >= 0", value)
            if value < 0:
                raise bad(option, "a number of seconds >= 0", value, ValueError)
        if self.timeout == 0:
            raise bad("timeout", "a number of seconds > 0 (or None for no limit)", 0, ValueError)
        if not number(self.backoff):
            raise bad("backoff", "a factor >= 1 (1 keeps the delay constant)", self.backoff)
        if self.backoff < 1:
            raise bad("backoff", "a factor >= 1 (1 keeps the delay constant)", self.backoff,
                      ValueError)
        retry_on = self.retry_on
        if isinstance(retry_on, tuple):
            if not all(_is_exception_type(t) for t in retry_on):
                raise bad("retry_on", "exception types, a tuple of them, or a predicate", retry_on)
        elif not (_is_exception_type(retry_on) or callable(retry_on)):
            raise bad("retry_on", "exception types, a tuple of them, or a predicate", retry_on)
        if not isinstance(self.priority, int) or isinstance(self.priority, bool):
            raise bad("priority", "an integer", self.priority)
        if self.resources is not None and not isinstance(self.resources, dict):
            raise bad("resources", "a dict such as {'GPU': 1}", self.resources)
        if self.version is not None and not isinstance(self.version, (str, int)):
            raise bad("version", "a string (or an integer) naming the op's code", self.version)
        if self.pure is not None and not isinstance(self.pure, bool):
            raise bad("pure", "True, False or None (the configured default)", self.pure)
        if self.quick is not None and not isinstance(self.quick, bool):
            raise bad("quick", "True, False or None (measure it)", self.quick)
        for option in ("cache", "allow_other_workers"):
            if not isinstance(getattr(self, option), bool):
                raise bad(option, "True or False", getattr(self, option))
        if isinstance(self.tags, str) or not isinstance(self.tags, (tuple, list, set, frozenset)):
            raise bad("tags", "a tuple of strings", self.tags)
        object.__setattr__(self, "tags", tuple(self.tags))
        if self.cache:
            CACHE_DECLARED[0] = True


#: ``[True]`` once an op of this process was given ``cache=True``: until then a run
#: has no cache entries to look up (and skips looking at each node for them).
CACHE_DECLARED = [False]

_OPTION_NAMES = tuple(f.name for f in dataclasses.fields(OpSettings))


class _Options(TypedDict, total=False):
    """The options of :func:`op` and :meth:`Op.options`, for type checkers."""

    name: str | None
    nout: int | None
    pure: bool | None
    retries: int
    retry_on: _RetryOn
    retry_delay: float
    backoff: float
    max_delay: float | None
    timeout: float | None
    cache: bool
    version: str | None
    resources: dict[str, float] | None
    priority: int
    workers: Any
    allow_other_workers: bool
    tags: Iterable[str]
    quick: bool | None


if TYPE_CHECKING:
    class _FunctionWrapper:
        """What type checkers see of ``wrapt.FunctionWrapper`` (wrapt ships no types)."""

        __wrapped__: Any

        def __init__(self, wrapped: Any, wrapper: Any) -> None: ...

        def __getattr__(self, name: str) -> Any: ...
else:
    _FunctionWrapper = wrapt.FunctionWrapper


def _signature(fn: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):  # builtins such as max, time.sleep
        return None


def _positional_range(sig: inspect.Signature | None) -> tuple[int, int] | None:
    """(min, max) positional arguments when a plain positional call needs no bind()."""
    if sig is None:
        return None
    low = high = 0
    for p in sig.parameters.values():
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            high += 1
            if p.default is p.empty:
                low = high
        elif p.kind is p.KEYWORD_ONLY and p.default is p.empty:
            return None
        elif p.kind is p.VAR_POSITIONAL:
            high = sys.maxsize
    return (low, high)


def _nout_from_annotation(fn: Callable[..., Any]) -> int | None:
    """``nout`` from a ``-> tuple[A, B]`` return annotation, when there is one."""
    try:
        ret = typing.get_type_hints(fn).get("return")
    except Exception:
        return None
    if typing.get_origin(ret) is tuple:
        parts = typing.get_args(ret)
        if parts and Ellipsis not in parts and parts != ((),):
            return len(parts)
    return None


def _name_of(fn: Callable[..., Any]) -> str:
    name = getattr(fn, "__name__", None)
    if name is None:
        inner = getattr(fn, "func", None)  # functools.partial
        name = getattr(inner, "__name__", None) or type(fn).__name__
    return keys.clean_name(name)


class _NodeMaker(Protocol):
    """What :class:`_Binder` needs of its op."""

    def _node(self, args: tuple[Any, ...], kwargs: dict[str, Any],
              pure: bool | None = None) -> Node[Any]: ...


class _Binder:
    """The wrapt wrapper of an op: turns a call (bound or not) into a node."""

    __slots__ = ("op",)
    op: _NodeMaker  # the Op

    def __call__(self, wrapped: Any, instance: Any, args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> Node[Any]:
        if instance is not None:  # a method call: self becomes an argument
            # obj.method(...) binds ``wrapped`` to obj; Class.method(obj, ...) gives
            # obj as ``instance`` and ``wrapped`` as a partial that holds it
            args = (getattr(wrapped, "__self__", instance), *args)
        return self.op._node(args, kwargs)


class Op(_FunctionWrapper, Generic[P, R]):
    """A decorated function: calling it returns a :class:`~flowdispatch.Node`.

    Create ops with :func:`op`; ``op.fn`` is the plain function. For type
    checkers an ``Op[P, R]`` takes the parameters ``P`` of the function (each
    may also be given as a node) and returns a ``Node[R]``.
    """

    def __init__(self, fn: Callable[P, R], settings: OpSettings):
        binder = _Binder()
        super().__init__(fn, binder)
        binder.op = self
        sig = _signature(fn)
        if settings.nout is None:
            nout = _nout_from_annotation(fn)
            if nout is not None:
                settings = dataclasses.replace(settings, nout=nout)
        self._self_settings = settings
        self._self_sig = sig
        self._self_fast = _positional_range(sig)
        self._self_name = keys.clean_name(settings.name) if settings.name else _name_of(fn)
        self._self_token: str | None = None
        self._self_checked: Checked | None = None

    # cloudpickle takes anything whose class is a function for a plain function and
    # drops the wrapper; an op reports its own class so that __reduce_ex__ is used.
    @property  # type: ignore[misc]  # read-only on purpose
    def __class__(self) -> type[Op[Any, Any]]:
        return type(self)

    def __reduce_ex__(self, protocol: typing.SupportsIndex) -> str | tuple[Any, ...]:
        module = sys.modules.get(getattr(self, "__module__", None) or "")
        qualname = getattr(self, "__qualname__", "")
        found: object = module
        for part in qualname.split("."):
            found = getattr(found, part, None)
        if found is self:
            return qualname  # importable: pickled by reference
        return (_rebuild_op, (self.__wrapped__, self._self_settings))

    # wrapt proxies refuse copying; an op is immutable, so a copy is the op itself
    # (as the copy module treats functions). Nodes hold ops, so deepcopy needs this.
    def __copy__(self) -> Op[P, R]:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Op[P, R]:
        return self

    if TYPE_CHECKING:  # wrapt binds methods; checkers learn it here
        __wrapped__: Callable[P, R]

        @overload
        def __get__(self, instance: None, owner: type | None = None) -> Op[P, R]: ...
        @overload
        def __get__(self: Op[Concatenate[_S, _P2], _R2], instance: _S,
                    owner: type | None = None) -> Op[_P2, _R2]: ...
        def __get__(self, instance: Any, owner: type | None = None) -> Any: ...

    def __repr__(self) -> str:
        return f"<op {self._self_name}>"

    # Any, not P: each argument may also be a node. The mypy plugin
    # (flowdispatch.mypy) checks calls against P, each parameter T as T | Node[T].
    def __call__(self, *args: Any, **kwargs: Any) -> Node[R]:
        return self._node(args, kwargs)

    def _node(self, args: tuple[Any, ...], kwargs: dict[str, Any],
              pure: bool | None = None) -> Node[R]:
        fast = self._self_fast
        if kwargs or fast is None or not fast[0] <= len(args) <= fast[1]:
            sig = self._self_sig
            if sig is not None:
                try:
                    sig.bind(*args, **kwargs)
                except TypeError as exc:
                    raise TypeError(
                        f"{self._self_name}{sig} got arguments that do not fit its "
                        f"signature: {exc}. Call it as you would call the plain function."
                    ) from None
        settings = self._self_settings
        if pure is None:
            pure = settings.pure
            if pure is None:  # the setting, read fast (it is read for every node built)
                section = _DASK_CONFIG.get("flowdispatch")
                pure = bool(section.get("pure")) if section else False
        if pure:  # the key follows the arguments: iterators become lists first
            args, kwargs = materialize(args), materialize(kwargs) if kwargs else kwargs
            key = keys.pure_key(self._self_name, self.__dask_tokenize__(), args, kwargs)
        else:
            key = keys.unique_key(self._self_name)
        return make_node(key, self, self.__wrapped__, args, kwargs, settings.nout)

    def _checked(self, fn: Callable[..., Any], nout: int) -> Checked:
        """``fn`` wrapped to check that it returns ``nout`` values (one per op and nout)."""
        found = self._self_checked
        if found is None or found.fn is not fn or found.nout != nout:
            found = Checked(fn, nout, self._self_name)
            if fn is self.__wrapped__:
                self._self_checked = found
        return found

    def __getattr__(self, name: str) -> Any:
        if name in _NODE_METHODS and not hasattr(self.__wrapped__, name):
            raise AttributeError(
                f"{self._self_name!r} is an op, not a node: call it to make a node, "
                f"e.g. {self._self_name}(...).{name}()")
        return super().__getattr__(name)

    def __dask_tokenize__(self) -> str:
        if self._self_token is None:
            from dask.base import tokenize

            self._self_token = tokenize(
                getattr(self.__wrapped__, "__module__", None),
                getattr(self.__wrapped__, "__qualname__", None),
                self.__wrapped__,
                self._self_settings.version,
            )
        return self._self_token

    @property
    def fn(self) -> Callable[P, R]:
        """The plain function, callable eagerly (for unit tests)."""
        return self.__wrapped__

    @property
    def settings(self) -> OpSettings:
        """The op's options."""
        return self._self_settings

    @property
    def op_name(self) -> str:
        """The name its nodes' keys start with."""
        return self._self_name

    def options(self, **changes: Unpack[_Options]) -> Op[P, R]:
        """A new op like this one with some options changed.

        Examples
        --------
        >>> import flowdispatch as fd
        >>> fetch = fd.op(len).options(retries=3, name="fetch")
        >>> fetch.settings.retries, fetch.op_name
        (3, 'fetch')
        """
        unknown = sorted(set(changes) - set(_OPTION_NAMES))
        if unknown:
            raise TypeError(
                f"unknown op option(s) {unknown}; expected some of {sorted(_OPTION_NAMES)}"
            )
        # OpSettings refuses a str for tags and makes a tuple of other iterables
        return Op(self.__wrapped__,
                  dataclasses.replace(self._self_settings, **changes))  # type: ignore[arg-type]

    @overload
    def map(self, iterable: Node[Iterable[Any]], /, *iterables: Any,
            **kwargs: Any) -> Node[list[R]]: ...
    @overload
    def map(self, iterable: Any, iterable2: Node[Iterable[Any]], /, *iterables: Any,
            **kwargs: Any) -> Node[list[R]]: ...
    @overload
    def map(self, *iterables: Iterable[Any] | unmapped[Any],
            **kwargs: Iterable[Any] | unmapped[Any]) -> list[Node[R]]: ...

    def map(self, *iterables: Any, **kwargs: Any) -> list[Node[R]] | Node[list[R]]:
        """One node per element of the iterables, zipped; ``fd.unmapped(x)`` is passed whole.

        When an iterable is a node (its length known only once it has run), the
        map is one node whose value is the list of the calls' values: when the
        iterables are known, it expands into one node per element, each with
        its own state, retries, timeout and cache entry.

        Examples
        --------
        >>> import flowdispatch as fd
        >>> nodes = fd.op(pow).map([1, 2, 3], fd.unmapped(2))
        >>> fd.compute(nodes, executor="sync")
        ([1, 4, 9],)
        >>> squares = fd.op(pow).map(fd.value([1, 2, 3]), fd.unmapped(2))  # one node
        >>> fd.compute(squares, executor="sync")
        ([1, 4, 9],)
        """
        if any(isinstance(v, Node) for v in (*iterables, *kwargs.values())):
            return self._lazy_map(iterables, kwargs)
        given, fixed_args, fixed_kwargs = _whole_apart(iterables, kwargs)
        mapped = [(where, list(self._iterable(where, value))) for where, value in given]
        return _zip_calls(self, mapped, fixed_args, fixed_kwargs, self._self_name)

    def _lazy_map(self, iterables: tuple[Any, ...], kwargs: dict[str, Any]) -> Node[list[R]]:
        """The node of :meth:`map` over iterables of which some are nodes."""
        given, fixed_args, fixed_kwargs = _whole_apart(iterables, kwargs)
        wheres = tuple(where for where, _ in given)
        mapped = [value if isinstance(value, Node) else list(self._iterable(where, value))
                  for where, value in given]
        label = keys.clean_name(f"{self._self_name}.map")
        key = keys.unique_key(label)
        helper = op(_map_calls, name=label)
        return make_node(key, helper, _map_calls,
                         (self, key, wheres, fixed_args, fixed_kwargs, *mapped),
                         None, None)

    def _iterable(self, where: str | int, value: Any) -> Iterable[Any]:
        """``value``, checked to be something :meth:`map` can map over."""
        if isinstance(value, (str, bytes, dict)) or not isinstance(value, Iterable):
            raise TypeError(
                f"{self._self_name}.map() maps over every argument: expected an "
                f"iterable (list, tuple, range, ...) for argument {where!r}, got "
                f"{type(value).__name__}. Wrap it in fd.unmapped(...) to pass it whole."
            )
        return value


def _map_calls(op: Op[..., Any], key: str, wheres: tuple[str | int, ...],
               fixed_args: dict[int, Any], fixed_kwargs: dict[str, Any],
               *iterables: Any) -> list[Node[Any]]:
    """The body of a lazy :meth:`Op.map` node ``key``: one node per element, zipped."""
    mapped = [(where, list(op._iterable(where, value))) for where, value in zip(wheres, iterables)]
    return _zip_calls(op, mapped, fixed_args, fixed_kwargs, f"node {key!r}: {op.op_name}")


def _whole_apart(iterables: tuple[Any, ...], kwargs: dict[str, Any],
                 ) -> tuple[list[tuple[str | int, Any]], dict[int, Any], dict[str, Any]]:
    """The arguments of :meth:`Op.map` to map over, by place (position or name), and
    those to pass whole (:class:`unmapped`), by position and by name."""
    given: list[tuple[str | int, Any]] = []
    fixed_args: dict[int, Any] = {}
    fixed_kwargs: dict[str, Any] = {}
    pairs: list[tuple[str | int, Any]] = [*enumerate(iterables), *kwargs.items()]
    for where, value in pairs:
        if not isinstance(value, unmapped):
            given.append((where, value))
        elif isinstance(where, int):
            fixed_args[where] = value.value
        else:
            fixed_kwargs[where] = value.value
    return given, fixed_args, fixed_kwargs


def _zip_calls(op: Op[..., Any], mapped: list[tuple[str | int, list[Any]]],
               fixed_args: dict[int, Any], fixed_kwargs: dict[str, Any],
               who: str) -> list[Node[Any]]:
    """One node of ``op`` per element of the ``mapped`` lists, zipped (``who`` is for
    the error when their lengths differ)."""
    lengths = {len(items) for _, items in mapped}
    if len(lengths) > 1:
        detail = ", ".join(f"{where!r}: {len(items)}" for where, items in mapped)
        raise ValueError(
            f"{who}.map() expected iterables of one length, got {detail}; give iterables "
            "of equal length, or wrap the one to pass whole in fd.unmapped(...)")
    count = lengths.pop() if lengths else 0
    columns: dict[int, Iterable[Any]] = {i: repeat(v, count) for i, v in fixed_args.items()}
    columns.update((where, items) for where, items in mapped if isinstance(where, int))
    rows: Iterable[tuple[Any, ...]] = (
        zip(*(columns[i] for i in range(len(columns)))) if columns else repeat((), count))
    names = [where for where, _ in mapped if isinstance(where, str)]
    node = op._node
    with paused_gc():  # a lazy map's expansion builds thousands
        if not names and not fixed_kwargs:
            return [node(args, {}) for args in rows]
        values = zip(*(items for where, items in mapped if isinstance(where, str)))
        return [node(args, {**fixed_kwargs, **dict(zip(names, row))})
                for args, row in zip(rows, values if names else repeat((), count))]


_NODE_METHODS = frozenset({"compute", "persist", "visualize", "dependencies", "key"})


class Checked:
    """An op's function, checked to return ``nout`` values: what its nodes call.

    A wrong count fails the op's own node with :class:`~flowdispatch.NoutError`
    (else unpacking would cut the values short, or fail later in a ``[i]`` node).

    Examples
    --------
    >>> Checked(divmod, 2, "divmod")(7, 2)
    (3, 1)
    >>> Checked(lambda: (1, 2, 3), 2, "split")()
    Traceback (most recent call last):
    ...
    flowdispatch.errors.NoutError: op 'split' has nout=2 but returned 3 values (a tuple): return exactly 2, or change its nout= (or its '-> tuple[...]' annotation)
    """

    __slots__ = ("fn", "nout", "name")

    def __init__(self, fn: Callable[..., Any], nout: int, name: str):
        self.fn: Callable[..., Any] = fn
        self.nout: int = nout
        self.name: str = name

    def __reduce__(self) -> tuple[type[Checked], tuple[Callable[..., Any], int, str]]:
        return (Checked, (self.fn, self.nout, self.name))

    def __repr__(self) -> str:
        return f"<{self.name} checked for nout={self.nout}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        result = self.fn(*args, **kwargs)
        if isinstance(result, Ref):  # a node, to expand: its value is checked when it runs
            return result
        try:
            count = len(result)
        except TypeError:
            count = None
        if count != self.nout:
            got = "no sequence" if count is None else f"{count} values"
            raise NoutError(
                f"op {self.name!r} has nout={self.nout} but returned {got} (a "
                f"{type(result).__name__}): return exactly {self.nout}, or change its nout= "
                "(or its '-> tuple[...]' annotation)")
        return result


def _rebuild_op(fn: Callable[P, R], settings: OpSettings) -> Op[P, R]:
    return Op(fn, settings)


class unmapped(Generic[_T]):  # noqa: N801 - reads as a marker, like prefect.unmapped
    """Mark an argument of :meth:`Op.map` to be passed whole to every call."""

    __slots__ = ("value",)

    def __init__(self, value: _T):
        self.value: _T = value


class _Decorator(Protocol):
    """What ``op(**options)`` returns: makes an op of a function."""

    def __call__(self, fn: Callable[P, R], /) -> Op[P, R]: ...


@overload
def op(fn: Callable[P, R], /, **options: Unpack[_Options]) -> Op[P, R]: ...
@overload
def op(fn: None = None, /, **options: Unpack[_Options]) -> _Decorator: ...
def op(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    nout: int | None = None,
    pure: bool | None = None,
    retries: int = 0,
    retry_on: _RetryOn = Exception,
    retry_delay: float = 0.0,
    backoff: float = 1.0,
    max_delay: float | None = None,
    timeout: float | None = None,
    cache: bool = False,
    version: str | None = None,
    resources: dict[str, float] | None = None,
    priority: int = 0,
    workers: Any = None,
    allow_other_workers: bool = False,
    tags: Iterable[str] = (),
    quick: bool | None = None,
) -> Op[..., Any] | _Decorator:
    """Make ``fn`` lazy: calling it returns a node instead of running it.

    Use it bare (``@op``) or with options (``@op(retries=3)``), or on any
    callable (``op(sum)``).

    Parameters
    ----------
    fn
        A function, lambda, builtin, method or callable object.
    name
        The name of its nodes (default: the function's name); keys start with it.
    nout
        How many values it returns, so that its nodes can be unpacked
        (``a, b = split(x)``). Read from a ``-> tuple[A, B]`` annotation if not given.
    pure
        Same arguments give the same key (and one node): use for functions
        without side effects. ``None`` (the default) follows the setting
        ``fd.config.set(pure=...)``, which is ``False`` unless changed.
    retries, retry_on, retry_delay, backoff, max_delay
        Run a failing call again up to ``retries`` more times, when the error
        matches ``retry_on`` (exception types, or a predicate on the exception),
        waiting ``retry_delay`` seconds, multiplied by ``backoff`` after each
        attempt, at most ``max_delay``.
    timeout
        Seconds after which the node fails with :class:`~flowdispatch.OpTimeoutError`
        and the run goes on. A process worker stops the op; a thread cannot be
        stopped, so the op is abandoned and runs on; in-line (sync) the node
        fails when it returns late.
    cache, version
        ``cache=True`` keeps the op's values on disk (:mod:`flowdispatch.cache`),
        keyed by its code, its arguments and everything upstream: a later run
        with the same lineage reads the value instead of running the op (and
        what only it needed), and its state is ``"cached"``. The code is the
        op's own source, or ``version`` (a string) when given: set it when the
        op's result depends on code elsewhere, and change it to invalidate.
    resources, priority, workers, allow_other_workers
        Scheduling hints: dask resources, a priority (higher runs first) and
        worker restrictions.
    tags
        Free labels, shown in the graph.
    quick
        Whether a call takes at most a few milliseconds, about what a dask
        scheduler spends on each task. On the dask executor the independent
        nodes of a quick op share tasks, in batches (each node keeps its own
        state, attempts, duration, callbacks, cache entry and error).
        ``None`` (the default) measures it: an op whose nodes took under
        5 ms each in its last dask run in this process is quick; in its first
        run, a few of its nodes run first to measure it. ``False``
        never batches it. An op with a ``timeout``, ``resources`` or
        ``workers`` always runs one task per node.

    Returns
    -------
    Op
        Or, without ``fn``, a decorator that makes one.

    Examples
    --------
    >>> import flowdispatch as fd
    >>> @fd.op(nout=2)
    ... def halves(rows):
    ...     return rows[::2], rows[1::2]
    >>> even, odd = halves([1, 2, 3, 4])
    >>> fd.compute(even, odd, executor="sync")
    ([1, 3], [2, 4])
    """
    settings = OpSettings(
        name=name,
        nout=nout,
        pure=pure,
        retries=retries,
        retry_on=retry_on,
        retry_delay=retry_delay,
        backoff=backoff,
        max_delay=max_delay,
        timeout=timeout,
        cache=cache,
        version=version,
        resources=resources,
        priority=priority,
        workers=workers,
        allow_other_workers=allow_other_workers,
        tags=tags,  # type: ignore[arg-type]  # OpSettings refuses a str, makes a tuple
        quick=quick,
    )
    if fn is None:
        return lambda f: _make_op(f, settings)  # type: ignore[return-value]  # generic
    return _make_op(fn, settings)


def _make_op(fn: Any, settings: OpSettings) -> Op[..., Any]:
    if isinstance(fn, Op):
        fn = fn.__wrapped__
    if isinstance(fn, Node) or not callable(fn):
        raise TypeError(
            "fd.op expected a callable (a function, lambda, builtin, method or "
            f"callable object), got {type(fn).__name__} {fn!r}"
        )
    return Op(fn, settings)
