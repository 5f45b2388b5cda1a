"""A mypy plugin that checks op calls against the wrapped function's signature.

For type checkers an op's call takes any arguments (``*args: Any``), because
each argument may be a node instead of a value. With this plugin mypy checks
every call of an ``Op[P, R]`` argument by argument against ``P``:

- a parameter of type ``T`` accepts ``T | Node[T]``;
- nodes inside an argument (``[node_a, node_b]``, ``{"k": node}``) count as
  their values, since they are replaced by them before the op runs;
- a missing, extra or misspelt argument is an error, as for a plain call;
- a generic op's result (``Node[T]``) is inferred from the arguments;
- ``op.map(...)`` is checked the same way, with each element of an iterable
  (and the value inside ``fd.unmapped(...)``) as the argument; a lazy map
  (``op.map(node)``, ``Node[list[R]]``) takes each element of the node's value;
- an op of an overloaded function (``fd.op(sum)``) is not checked: mypy
  would take its first overload for all of them.

Enable it in the mypy configuration (mypy imports it; a program never does)::

    [mypy]
    plugins = flowdispatch.mypy

or, in ``pyproject.toml``, ``plugins = ["flowdispatch.mypy"]`` under
``[tool.mypy]``.

Examples
--------
>>> plugin("1.10").__name__
'FlowdispatchPlugin'
"""

from __future__ import annotations

from collections.abc import Callable

from mypy.checker import TypeChecker
from mypy.maptype import map_instance_to_supertype
from mypy.nodes import (
    ARG_STAR,
    ARG_STAR2,
    CallExpr,
    DictExpr,
    Expression,
    ListExpr,
    MemberExpr,
    NameExpr,
    SetExpr,
    StarExpr,
    TempNode,
    TupleExpr,
    TypeInfo,
)
from mypy.plugin import FunctionContext, MethodContext, Plugin
from mypy.subtypes import is_same_type
from mypy.type_visitor import TypeTranslator
from mypy.typeops import make_simplified_union
from mypy.types import (
    AnyType,
    CallableType,
    Instance,
    Overloaded,
    Parameters,
    ParamSpecType,
    TupleType,
    Type,
    TypeAliasType,
    TypeOfAny,
    UnionType,
    UnpackType,
    get_proper_type,
)

__all__ = ["FlowdispatchPlugin", "plugin"]

_OP_CALL = "flowdispatch.core.op.Op.__call__"
_OP_MAP = "flowdispatch.core.op.Op.map"
_UNMAPPED = "flowdispatch.core.op.unmapped"
_NODE = "flowdispatch.core.node.Node"
_MAP_ITEMS = 20  # op.map([...]): items of a list display checked one by one, at most
_MAKERS = ("flowdispatch.core.op.op", "flowdispatch.core.op._Decorator.__call__")


class FlowdispatchPlugin(Plugin):
    """Checks calls of ops (``flowdispatch.core.op.Op.__call__``) argument by argument."""

    def get_method_hook(self, fullname: str) -> Callable[[MethodContext], Type] | None:
        """The hooks for ``Op.__call__`` and ``op(**options)(fn)``; none for other methods."""
        if fullname == _OP_CALL:
            return _check_op_call
        if fullname == _OP_MAP:
            return _check_op_map
        return _unchecked_if_overloaded if fullname in _MAKERS else None

    def get_function_hook(self, fullname: str) -> Callable[[FunctionContext], Type] | None:
        """The hook for ``op(fn)``; none for other functions."""
        return _unchecked_if_overloaded if fullname in _MAKERS else None


def _unchecked_if_overloaded(ctx: FunctionContext | MethodContext) -> Type:
    """``Op[..., R]`` for an op of an overloaded function (``R``: their common result, or Any)."""
    made = get_proper_type(ctx.default_return_type)
    fns = [get_proper_type(t) for t in ctx.arg_types[0]] if ctx.arg_types else []
    if not isinstance(made, Instance) or len(fns) != 1 or not isinstance(fns[0], Overloaded):
        return ctx.default_return_type
    results = [item.ret_type for item in fns[0].items]
    same = all(is_same_type(r, results[0]) for r in results)
    anything = AnyType(TypeOfAny.special_form)
    params = Parameters([anything, anything], [ARG_STAR, ARG_STAR2], [None, None],
                        is_ellipsis_args=True)
    return made.copy_modified(args=[params, results[0] if same else anything])


class _ValuesOfNodes(TypeTranslator):
    """Replaces ``Node[X]`` by ``X`` inside other types (``list[Node[int]]`` -> ``list[int]``)."""

    def __init__(self, node: TypeInfo):
        super().__init__()
        self.node = node
        self.found = False

    def visit_instance(self, t: Instance) -> Type:
        if t.type is self.node and t.args:
            self.found = True
            return t.args[0].accept(self)
        return super().visit_instance(t)

    def visit_type_alias_type(self, t: TypeAliasType) -> Type:
        return get_proper_type(t).accept(self)

    def visit_callable_type(self, t: CallableType) -> Type:
        return t  # a function's nodes are not replaced by their values


def _parameters(op_type: Instance) -> Parameters | None:
    """The op's ``P``, when it is known (not ``...``) and plain enough to check."""
    if len(op_type.args) != 2:
        return None
    params = get_proper_type(op_type.args[0])
    if not isinstance(params, Parameters) or params.is_ellipsis_args:
        return None
    if any(isinstance(get_proper_type(t), (ParamSpecType, UnpackType)) for t in params.arg_types):
        return None
    return params


def _or_node(node: TypeInfo, t: Type) -> Type:
    """``T | Node[T]``: what a parameter of type ``T`` accepts in an op's call."""
    if isinstance(get_proper_type(t), AnyType):
        return t
    return UnionType.make_union([t, Instance(node, [t])])


def _as_run(api: TypeChecker, node: TypeInfo, arg: Expression, generic: bool) -> Expression:
    """The argument as the op will see it: nodes inside it replaced by their values.

    A node itself stays, unless the op is generic (the parameter accepts
    ``Node[T]``, and the message then names it; for a generic op, ``T | Node[T]``
    would leave ``T`` ambiguous). An argument without nodes stays as written,
    so that mypy infers it in the parameter's context.
    """
    if isinstance(arg, (ListExpr, SetExpr, TupleExpr, DictExpr)):
        return _in_literal(api, node, arg)
    new = _with_values(node, api.expr_checker.accept(arg), generic)
    return arg if new is None else TempNode(new, context=arg)


def _with_values(node: TypeInfo, typ: Type, generic: bool) -> Type | None:
    """``typ`` with the nodes inside it replaced by their values; None if it has none."""
    values = _ValuesOfNodes(node)
    proper = get_proper_type(typ)
    if isinstance(proper, Instance) and proper.type is node and proper.args and not generic:
        new: Type = Instance(node, [proper.args[0].accept(values)])
    else:
        new = proper.accept(values)
    return new if values.found else None


def _in_literal(api: TypeChecker, node: TypeInfo, expr: Expression) -> Expression:
    """A list, tuple, set or dict display with the nodes in it (values of dicts) as values."""
    new: Expression
    if isinstance(expr, (ListExpr, SetExpr, TupleExpr)):
        new = type(expr)([_in_literal(api, node, item) for item in expr.items])
    elif isinstance(expr, DictExpr):
        new = DictExpr([(k, _in_literal(api, node, v)) for k, v in expr.items])
    else:
        return _as_run(api, node, expr, generic=True)
    new.set_line(expr)
    return new


def _op_name(callee: Expression) -> str | None:
    return callee.name if isinstance(callee, (NameExpr, MemberExpr)) else None


def _callee(api: TypeChecker, node: TypeInfo, op_type: Instance, params: Parameters,
            name: str | None) -> CallableType:
    """The op's signature as a call may use it: each parameter ``T`` as ``T | Node[T]``."""
    return CallableType(
        [_or_node(node, t) for t in params.arg_types],
        list(params.arg_kinds),
        list(params.arg_names),
        op_type.args[1],
        api.named_type("builtins.function"),
        name=name,
        variables=params.variables,
    )


def _check_op_call(ctx: MethodContext) -> Type:
    """Check the call against ``P`` (each ``T`` as ``T | Node[T]``); return ``Node[R]``."""
    call, api, op_type = ctx.context, ctx.api, ctx.type
    node = get_proper_type(ctx.default_return_type)  # Node[R], as Op.__call__ declares it
    if (not isinstance(call, CallExpr) or not isinstance(api, TypeChecker)
            or not isinstance(node, Instance) or not isinstance(op_type, Instance)):
        return ctx.default_return_type
    params = _parameters(op_type)
    if params is None:
        return ctx.default_return_type
    callee = _callee(api, node.type, op_type, params, _op_name(call.callee))
    args = [_as_run(api, node.type, arg, bool(params.variables)) for arg in call.args]
    result, _ = api.expr_checker.check_call(callee, args, call.arg_kinds, call, call.arg_names)
    return Instance(node.type, [result])


def _element(api: TypeChecker, node: TypeInfo, arg: Expression, index: int,
             generic: bool) -> Expression:
    """What ``op.map`` passes for ``arg`` in its ``index``-th call, as the op sees it."""
    anything = TempNode(AnyType(TypeOfAny.special_form), context=arg)
    if isinstance(arg, (ListExpr, TupleExpr, SetExpr)):
        if not arg.items:
            return anything
        item = arg.items[min(index, len(arg.items) - 1)]
        return anything if isinstance(item, StarExpr) else _as_run(api, node, item, generic)
    typ = get_proper_type(api.expr_checker.accept(arg))
    if isinstance(typ, Instance) and typ.type is node and typ.args:  # a lazy map's iterable
        typ = get_proper_type(typ.args[0])
    if isinstance(typ, TupleType):
        typ = typ.partial_fallback
    if not isinstance(typ, Instance):
        return anything
    if typ.type.fullname == _UNMAPPED:
        value = typ.args[0] if typ.args else anything.type
    elif typ.type.has_base("typing.Iterable"):
        iterable = api.lookup_typeinfo("typing.Iterable")
        value = map_instance_to_supertype(typ, iterable).args[0]
    else:
        return anything
    return TempNode(_with_values(node, value, generic) or value, context=arg)


def _check_op_map(ctx: MethodContext) -> Type:
    """Check ``op.map(...)``'s calls against ``P``; return ``list[Node[R]]``, or
    ``Node[list[R]]`` for a lazy map (over an iterable that is a node)."""
    call, api, op_type = ctx.context, ctx.api, ctx.type
    made = get_proper_type(ctx.default_return_type)  # as the overload of Op.map declares it
    if (not isinstance(call, CallExpr) or not isinstance(api, TypeChecker)
            or not isinstance(made, Instance) or not isinstance(op_type, Instance)
            or any(kind in (ARG_STAR, ARG_STAR2) for kind in call.arg_kinds)):
        return ctx.default_return_type
    lazy = made.type.fullname == _NODE and bool(made.args)
    listed = get_proper_type(made.args[0]) if lazy else made  # list[R] or list[Node[R]]
    if not isinstance(listed, Instance):
        return ctx.default_return_type
    node = made if lazy else get_proper_type(listed.args[0]) if listed.args else None
    params = _parameters(op_type)
    if params is None or not isinstance(node, Instance) or not isinstance(call.callee, MemberExpr):
        return ctx.default_return_type
    callee = _callee(api, node.type, op_type, params, _op_name(call.callee.expr))
    displays = [len(a.items) for a in call.args if isinstance(a, (ListExpr, TupleExpr, SetExpr))]
    results = []
    for index in range(min(max(displays, default=1), _MAP_ITEMS)):
        args = [_element(api, node.type, arg, index, bool(params.variables)) for arg in call.args]
        result, _ = api.expr_checker.check_call(callee, args, call.arg_kinds, call,
                                                call.arg_names)
        results.append(result)
    value = make_simplified_union(results)
    if lazy:
        return made.copy_modified(args=[listed.copy_modified(args=[value])])
    return made.copy_modified(args=[Instance(node.type, [value])])


def plugin(version: str) -> type[Plugin]:
    """The entry point mypy calls (``plugins = flowdispatch.mypy``)."""
    return FlowdispatchPlugin
