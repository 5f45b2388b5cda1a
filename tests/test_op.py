"""@op: the decorator, its options, introspection, map/unmapped and pickling."""

import copy
import functools
import inspect
import pickle
import pydoc

import cloudpickle
import pytest

import flowdispatch as fd


@fd.op
def add(x: int, y: int = 1) -> int:
    """Add two numbers."""
    return x + y


@fd.op(retries=2, name="fetch", tags=["io"])
def fetch_value(url: str) -> str:
    return url.upper()


@fd.op
def split_pair(text: str) -> tuple[int, str]:
    return len(text), text


class Scaler:
    def __init__(self, factor):
        self.factor = factor

    def __call__(self, x):
        return x * self.factor

    def scale(self, x):
        return x * self.factor

    @fd.op
    def shifted(self, x):
        return x + self.factor


# -- decorating ------------------------------------------------------------------------------

def test_bare_decorator_makes_an_op_whose_calls_are_nodes():
    assert isinstance(add, fd.Op)
    node = add(2, 3)
    assert isinstance(node, fd.Node)
    assert node.op is add
    assert (node.args, node.kwargs) == ((2, 3), {})
    assert node.compute(executor="sync") == 5


def test_decorator_with_options():
    assert fetch_value.settings.retries == 2
    assert fetch_value.settings.tags == ("io",)
    assert fetch_value.op_name == "fetch"
    assert fetch_value("a").name == "fetch"
    assert fetch_value("a").compute(executor="sync") == "A"


def test_fn_is_the_plain_function():
    assert add.fn(2, 3) == 5
    assert add.fn is add.__wrapped__
    assert not isinstance(add.fn, fd.Op)


def test_on_a_lambda():
    double = fd.op(lambda x: 2 * x)
    assert double.op_name == "lambda"
    assert double(4).compute(executor="sync") == 8


def test_on_builtins():
    assert fd.op(sum)([1, 2, 3]).compute(executor="sync") == 6
    assert fd.op(max)(1, 7, 3).compute(executor="sync") == 7
    assert fd.op(max).op_name == "max"


def test_a_builtin_without_a_signature_is_not_checked_at_call_time():
    node = fd.op(max)()  # max has no signature: no check here...
    with pytest.raises(TypeError, match=r"max expected at least 1 argument, got 0"):
        node.compute(executor="sync")  # ...so the call fails when it runs


def test_on_a_callable_object():
    scaler = fd.op(Scaler(3))
    assert scaler.op_name == "Scaler"
    assert scaler(5).compute(executor="sync") == 15


def test_on_a_bound_method():
    scale = fd.op(Scaler(4).scale)
    assert scale.op_name == "scale"
    assert scale(5).compute(executor="sync") == 20


def test_a_decorated_method_called_on_an_instance_is_a_node():
    obj = Scaler(10)
    node = obj.shifted(5)
    assert isinstance(node, fd.Node)
    assert node.args == (obj, 5)
    assert node.name == "shifted"
    assert node.compute(executor="sync") == 15


def test_a_decorated_method_called_through_the_class_is_a_node():
    obj = Scaler(10)
    node = Scaler.shifted(obj, 5)
    assert node.args == (obj, 5)
    assert node.compute(executor="sync") == 15
    assert Scaler.shifted(obj, x=1).compute(executor="sync") == 11
    with pytest.raises(TypeError, match=r"shifted\(self, x\) got arguments that do not fit its "
                                        r"signature: missing a required argument: 'x'"):
        Scaler.shifted(obj)


def test_on_functools_partial():
    add_ten = fd.op(functools.partial(add.fn, y=10))
    assert add_ten.op_name == "add"
    assert add_ten(1).compute(executor="sync") == 11


def test_an_op_of_an_op_wraps_the_plain_function():
    again = fd.op(add, retries=1)
    assert again.fn is add.fn
    assert again.settings.retries == 1
    assert add.settings.retries == 0


@pytest.mark.parametrize("thing", [3, True, [1, 2], "text"])
def test_non_callables_are_refused(thing):
    with pytest.raises(TypeError, match=r"fd.op expected a callable \(a function, lambda, "
                                        rf"builtin, method or callable object\), got "
                                        rf"{type(thing).__name__} "):
        fd.op(thing)


def test_a_node_is_not_an_op():
    with pytest.raises(TypeError, match=r"fd.op expected a callable .*, got Node Node\('add-"):
        fd.op(add(1))


# -- introspection ---------------------------------------------------------------------------

def test_signature_is_the_functions():
    assert inspect.signature(add) == inspect.signature(add.fn)
    assert str(inspect.signature(add)) == "(x: int, y: int = 1) -> int"


def test_name_doc_module_and_qualname():
    assert add.__name__ == "add"
    assert add.__doc__ == "Add two numbers."
    assert add.__module__ == __name__
    assert add.__qualname__ == "add"
    assert repr(add) == "<op add>"


def test_help_shows_the_signature_and_docstring():
    text = pydoc.render_doc(add, renderer=pydoc.plaintext)
    assert "add(x: int, y: int = 1) -> int" in text
    assert "Add two numbers." in text


def test_inspect_sees_a_function():
    assert inspect.getdoc(add) == "Add two numbers."
    assert "return x + y" in inspect.getsource(add)
    assert callable(add)


# -- call-time checks ------------------------------------------------------------------------

@pytest.mark.parametrize("args, kwargs, reason", [
    ((), {}, "missing a required argument: 'x'"),
    ((1, 2, 3), {}, "too many positional arguments"),
    ((1,), {"z": 3}, "got an unexpected keyword argument 'z'"),
    ((1,), {"x": 2}, "multiple values for argument 'x'"),
])
def test_a_wrong_call_raises_type_error_at_once(args, kwargs, reason):
    with pytest.raises(TypeError) as info:
        add(*args, **kwargs)
    assert str(info.value) == (
        f"add(x: int, y: int = 1) -> int got arguments that do not fit its signature: "
        f"{reason}. Call it as you would call the plain function.")


def test_a_wrong_call_of_a_method_op_is_caught():
    with pytest.raises(TypeError, match=r"shifted\(self, x\) got arguments that do not fit its "
                                        r"signature: missing a required argument: 'x'"):
        Scaler(1).shifted()


def test_keyword_only_and_var_arguments_bind():
    @fd.op
    def f(a, /, *rest, key, **extra):
        return a, rest, key, extra

    assert f(1, 2, key=3, z=4).compute(executor="sync") == (1, (2,), 3, {"z": 4})
    with pytest.raises(TypeError, match=r"missing a required argument: 'key'"):
        f(1)
    with pytest.raises(TypeError, match=r"'a' parameter is positional only, but was passed "
                                        r"as a keyword"):
        f(a=1, key=2)


# -- options ---------------------------------------------------------------------------------

@pytest.mark.parametrize("options, message", [
    ({"retries": -1}, "op option retries= expected a whole number >= 0, got -1"),
    ({"retries": True}, "op option retries= expected a whole number >= 0, got True"),
    ({"retries": 1.5}, "op option retries= expected a whole number >= 0, got 1.5"),
    ({"nout": -1}, "op option nout= expected a whole number >= 0, got -1"),
    ({"retry_delay": "1"}, "op option retry_delay= expected a number of seconds >= 0, got '1'"),
    ({"max_delay": -1}, "op option max_delay= expected a number of seconds >= 0, got -1"),
    ({"timeout": 0}, "op option timeout= expected a number of seconds > 0 (or None for no "
                     "limit), got 0"),
    ({"timeout": -2.0}, "op option timeout= expected a number of seconds >= 0, got -2.0"),
    ({"backoff": 0.5}, "op option backoff= expected a factor >= 1 (1 keeps the delay constant), "
                       "got 0.5"),
    ({"retry_on": 3}, "op option retry_on= expected exception types, a tuple of them, or a "
                      "predicate, got 3"),
    ({"retry_on": (ValueError, 3)}, "op option retry_on= expected exception types, a tuple of "
                                    "them, or a predicate, got (<class 'ValueError'>, 3)"),
    ({"retry_on": (int,)}, "op option retry_on= expected exception types, a tuple of them, or "
                           "a predicate, got (<class 'int'>,)"),
    ({"priority": 1.5}, "op option priority= expected an integer, got 1.5"),
    ({"resources": ["GPU"]}, "op option resources= expected a dict such as {'GPU': 1}, got "
                             "['GPU']"),
    ({"pure": "yes"}, "op option pure= expected True, False or None (the configured default), "
                      "got 'yes'"),
    ({"cache": 1}, "op option cache= expected True or False, got 1"),
    ({"tags": "io"}, "op option tags= expected a tuple of strings, got 'io'"),
    ({"name": ""}, "op option name= expected a non-empty string, got ''"),
    ({"name": 5}, "op option name= expected a non-empty string, got 5"),
])
def test_options_are_validated_when_the_decorator_is_applied(options, message):
    # a value of the wrong type is a TypeError; of the right type but out of range, a
    # ValueError (as dask does)
    out_of_range = [{"nout": -1}, {"retries": -1}, {"max_delay": -1}, {"timeout": 0},
                    {"timeout": -2.0}, {"backoff": 0.5}, {"name": ""}]
    kind = ValueError if options in out_of_range else TypeError
    with pytest.raises(kind) as info:
        fd.op(**options)
    assert type(info.value) is kind
    assert str(info.value) == message
    with pytest.raises(kind) as info:
        add.options(**options)
    assert str(info.value) == message


def test_valid_retry_on_forms():
    assert fd.op(len, retry_on=OSError).settings.retry_on is OSError
    assert fd.op(len, retry_on=(OSError, KeyError)).settings.retry_on == (OSError, KeyError)
    predicate = lambda exc: True  # noqa: E731
    assert fd.op(len, retry_on=predicate).settings.retry_on is predicate


def test_unknown_option():
    with pytest.raises(TypeError, match=r"op\(\) got an unexpected keyword argument 'retry'"):
        fd.op(len, retry=3)


def test_options_makes_a_new_op():
    patient = add.options(retries=5, name="patient_add")
    assert isinstance(patient, fd.Op)
    assert (patient.settings.retries, patient.op_name) == (5, "patient_add")
    assert (add.settings.retries, add.op_name) == (0, "add")
    assert patient.fn is add.fn
    assert patient(1, 2).compute(executor="sync") == 3


def test_options_rejects_unknown_names():
    with pytest.raises(TypeError, match=r"unknown op option\(s\) \['bogus', 'retry'\]; expected "
                                        r"some of \['allow_other_workers', 'backoff', 'cache', "):
        add.options(retry=1, bogus=2)


def test_settings_are_immutable():
    with pytest.raises(AttributeError):
        add.settings.retries = 3


# -- nout ------------------------------------------------------------------------------------

def test_nout_from_a_tuple_annotation():
    assert split_pair.settings.nout == 2
    n, text = split_pair("abc")
    assert fd.compute(n, text, executor="sync") == (3, "abc")


@pytest.mark.parametrize("annotation, nout", [
    ("tuple[int, str, float]", 3),
    ("tuple[int]", 1),
    ("tuple[int, ...]", None),
    ("tuple", None),
    ("list[int]", None),
    ("int", None),
])
def test_nout_from_other_annotations(annotation, nout):
    namespace: dict = {}
    exec(f"def f() -> {annotation}: pass", namespace)
    assert fd.op(namespace["f"]).settings.nout == nout


def test_an_explicit_nout_wins_over_the_annotation():
    assert fd.op(split_pair.fn, nout=3).settings.nout == 3


# -- map and unmapped ------------------------------------------------------------------------

def test_map_makes_one_node_per_element():
    nodes = add.map([1, 2, 3], [10, 20, 30])
    assert [node.name for node in nodes] == ["add", "add", "add"]
    assert fd.compute(nodes, executor="sync") == ([11, 22, 33],)


def test_map_over_keywords_and_unmapped_arguments():
    nodes = add.map([1, 2], y=[5, 6])
    assert fd.compute(nodes, executor="sync") == ([6, 8],)
    nodes = add.map(range(3), fd.unmapped(100))
    assert fd.compute(nodes, executor="sync") == ([100, 101, 102],)
    nodes = add.map(x=[1, 2], y=fd.unmapped(7))
    assert fd.compute(nodes, executor="sync") == ([8, 9],)


def test_unmapped_passes_a_list_whole():
    pairs = fd.op(lambda x, items: items + [x], name="append").map([1, 2], fd.unmapped([0]))
    assert fd.compute(pairs, executor="sync") == ([[0, 1], [0, 2]],)


def test_map_over_nodes():
    inputs = add.map([1, 2], fd.unmapped(0))
    doubled = fd.op(lambda x: 2 * x, name="double").map(inputs)
    assert [node.dependencies for node in doubled] == [(inputs[0],), (inputs[1],)]
    assert fd.compute(doubled, executor="sync") == ([2, 4],)


def test_map_over_nothing():
    assert add.map([], []) == []
    assert add.map() == []


def test_map_needs_iterables_of_one_length():
    with pytest.raises(ValueError, match=r"add.map\(\) expected iterables of one length, got "
                                         r"0: 3, 'y': 2"):
        add.map([1, 2, 3], y=[1, 2])


@pytest.mark.parametrize("value, kind", [(5, "int"), ("abc", "str"), ({"a": 1}, "dict"),
                                         (b"xy", "bytes")])
def test_map_refuses_what_it_cannot_map_over(value, kind):
    with pytest.raises(TypeError) as info:
        add.map([1], value)
    assert str(info.value) == (
        f"add.map() maps over every argument: expected an iterable (list, tuple, range, ...) "
        f"for argument 1, got {kind}. Wrap it in fd.unmapped(...) to pass it whole.")


def test_map_checks_each_call_against_the_signature():
    with pytest.raises(TypeError, match=r"too many positional arguments"):
        add.map([1], [2], [3])


# -- pickling --------------------------------------------------------------------------------

def test_an_importable_op_pickles_by_reference():
    data = pickle.dumps(add)
    assert len(data) < 100
    assert pickle.loads(data) is add


def test_nodes_of_an_importable_op_round_trip():
    node = add(add(1, 2), y=add(3))
    again = pickle.loads(pickle.dumps(node))
    assert again == node
    assert again.op is add
    assert again.dependencies == node.dependencies
    assert again.kwargs["y"] == node.kwargs["y"]
    assert again.compute(executor="sync") == 7


def test_a_list_of_leaf_nodes_of_one_op_pickles_as_columns_and_comes_back_whole():
    from flowdispatch.core.node import as_columns

    nodes = add.map([1, 2, 3], y=fd.unmapped(10))
    packed = pickle.dumps(as_columns(nodes))
    assert len(packed) < len(pickle.dumps(nodes))  # the op once, not once a node
    again = pickle.loads(packed)
    assert again == nodes
    assert [(n.op, n.args, n.kwargs) for n in again] == [(add, (x,), {"y": 10}) for x in (1, 2, 3)]
    assert fd.compute(*again, executor="sync") == (11, 12, 13)


def test_lists_that_are_not_leaves_of_one_op_pickle_node_by_node():
    from flowdispatch.core.node import as_columns

    other = fd.op(max)
    mixed = [add(1), other(1, 2)]
    deep = [add(1), add(add(2))]
    for value in (mixed, deep, [add(1), 5], [], (add(1),)):
        assert as_columns(value) is value


def test_cloudpickle_of_a_lambda_op_keeps_its_options():
    lam = fd.op(lambda x: x * 2, retries=3, name="twice")
    again = cloudpickle.loads(cloudpickle.dumps(lam))
    assert isinstance(again, fd.Op)
    assert (again.settings.retries, again.op_name) == (3, "twice")
    assert again.fn(4) == 8


def test_cloudpickle_of_a_node_of_a_local_op_keeps_its_options():
    @fd.op(retries=4, retry_on=(OSError,))
    def local(x):
        return x - 1

    node = local(local(5))
    again = cloudpickle.loads(cloudpickle.dumps(node))
    assert again.key == node.key
    assert again.op.settings.retries == 4
    assert again.op.settings.retry_on == (OSError,)
    assert again.dependencies[0].op.settings.retries == 4
    assert again.compute(executor="sync") == 3


def _chain(length):
    node = fd.value(0)
    for _ in range(length):
        node = add(node)
    return node


def test_a_1000_link_chain_pickles():
    last = _chain(1000)
    again = pickle.loads(pickle.dumps(last))
    assert again == last
    assert len(fd.Graph(again)) == 1001
    assert again.compute(executor="sync") == 1000


def test_a_100000_link_chain_pickles_flat_and_deep_copies():
    last = _chain(100_000)
    again = pickle.loads(pickle.dumps(last))
    assert again.key == last.key
    assert again.dependencies[0].key == last.dependencies[0].key
    assert len(fd.Graph(again)) == 100_001
    copied = copy.deepcopy(last)
    assert copied == last and copied is not last
    assert len(fd.Graph(copied)) == 100_001


def test_ops_copy_as_themselves():
    assert copy.copy(add) is add
    assert copy.deepcopy(add) is add
    assert copy.deepcopy({"op": add})["op"] is add


# -- nout is checked when the op returns -----------------------------------------------------
@fd.op
def three_for_two() -> tuple[int, int]:
    return 1, 2, 3


@fd.op(nout=2)
def one_for_two():
    return 1


@pytest.mark.parametrize("executor", ["sync", "threads", "processes"])
def test_a_wrong_number_of_values_fails_the_ops_own_node(executor):
    node = three_for_two()
    item = node[0]
    res = fd.run(item, executor=executor)
    assert (res.state(node), res.state(item)) == ("failed", "upstream_failed")
    error = res.error(node)
    assert type(error) is fd.NoutError and isinstance(error, ValueError)
    assert str(error) == ("op 'three_for_two' has nout=2 but returned 3 values (a tuple): "
                          "return exactly 2, or change its nout= (or its '-> tuple[...]' "
                          "annotation)")
    with pytest.raises(fd.NoutError, match=r"^op 'one_for_two' has nout=2 but returned no "
                                           r"sequence \(a int\)"):
        fd.compute(one_for_two()[0], executor=executor)


def test_a_wrong_number_of_values_fails_the_ops_own_node_on_dask(dask_executor):
    node = three_for_two()
    item = node[0]
    res = fd.run(item, executor=dask_executor)
    assert (res.state(node), res.state(item)) == ("failed", "upstream_failed")
    assert type(res.error(node)) is fd.NoutError
    assert "has nout=2 but returned 3 values" in str(res.error(node))


def test_the_check_keeps_the_plain_function_and_the_right_count():
    assert three_for_two.fn() == (1, 2, 3)
    assert fd.op(divmod, nout=2)(7, 2).compute(executor="sync") == (3, 1)


# -- forgetting to call an op ----------------------------------------------------------------
@pytest.mark.parametrize("name", ["compute", "visualize", "persist"])
def test_a_node_method_on_an_op_says_to_call_it(name):
    with pytest.raises(AttributeError, match=rf"^'add' is an op, not a node: call it to make a "
                                             rf"node, e.g. add\(...\).{name}\(\)"):
        getattr(add, name)()
    assert not hasattr(add, "compute")
