"""The parameter contract: parsing the `parameters` cell and validating values."""
from __future__ import annotations

import pytest

from cd4ml_nb.exceptions import NotebookError, ParameterError
from cd4ml_nb.params import Contract, parse_cell, validate

CELL = '''
alpha: float = 0.5  # learning rate
name: str = "x"
n = 3
flag = False
# kept for later
tags: list[int] = [1, 2]
extra = None
opts: dict = {"a": 1}
maybe: int | None = None
expr = 2 ** 10
import os
'''


@pytest.fixture
def contract() -> Contract:
    return Contract(parse_cell(CELL), cell_index=0)


def test_contract_types_defaults_and_help(contract):
    by_name = {p.name: p for p in contract.parameters}
    assert list(by_name) == ["alpha", "name", "n", "flag", "tags", "extra", "opts", "maybe", "expr"]
    assert (by_name["alpha"].type, by_name["alpha"].default, by_name["alpha"].help) == ("float", 0.5, "learning rate")
    assert (by_name["name"].type, by_name["n"].type, by_name["flag"].type) == ("str", "int", "bool")
    assert by_name["tags"].type == "list[int]" and by_name["tags"].help == "kept for later"
    assert by_name["extra"].type == "any" and by_name["extra"].nullable
    assert by_name["maybe"].type == "int" and by_name["maybe"].nullable
    assert by_name["expr"].type == "any" and by_name["expr"].expression == "2 ** 10"


def test_texts_are_coerced_to_declared_types(contract):
    values = validate(contract, {"alpha": "0.25", "name": "007", "n": "12", "flag": "yes",
                                 "tags": "[3, 4]", "opts": '{"b": 2}', "maybe": "null"})
    assert values == {"alpha": 0.25, "name": "007", "n": 12, "flag": True, "tags": [3, 4],
                      "opts": {"b": 2}, "maybe": None}
    assert type(values["alpha"]) is float and type(values["name"]) is str


def test_untyped_none_default_reads_the_text_as_papermill_does(contract):
    assert validate(contract, {"extra": "[1, 2]"}) == {"extra": "[1, 2]"}  # papermill: the text, not a list
    assert validate(contract, {"extra": '"Hello"'}) == {"extra": '"Hello"'}  # its quotes kept
    assert validate(contract, {"extra": "True"}) == {"extra": True}
    assert validate(contract, {"extra": "None"}) == {"extra": None}
    assert validate(contract, {"extra": "7"}) == {"extra": 7}
    assert validate(contract, {"extra": "3.5"}) == {"extra": 3.5}
    assert validate(contract, {"extra": "hello world"}) == {"extra": "hello world"}
    assert validate(contract, {"extra": "{unclosed"}) == {"extra": "{unclosed"}


def test_typed_values_from_yaml_are_checked(contract):
    assert validate(contract, values={"alpha": 1, "n": 2, "name": "y"}) == {"alpha": 1.0, "n": 2, "name": "y"}
    with pytest.raises(ParameterError, match="quote it"):
        validate(contract, values={"name": 7})
    with pytest.raises(ParameterError, match="n=True"):
        validate(contract, values={"n": True})


@pytest.mark.parametrize(
    "texts, fragment",
    [
        ({"alpha": "abc"}, "alpha='abc' does not fit float"),
        ({"n": "1.5"}, "n='1.5' does not fit int"),
        ({"flag": "maybe"}, "flag='maybe' does not fit bool"),
        ({"tags": "[1, 'x']"}, "does not fit list[int]"),
        ({"nope": "1"}, "unknown parameter 'nope'"),
        ({"x=1\nimport os": "1"}, "unknown parameter"),
        ({"os": "1"}, "unknown parameter 'os'"),
    ],
)
def test_bad_values_list_the_declared_parameters(contract, texts, fragment):
    with pytest.raises(ParameterError) as info:
        validate(contract, texts, where="nb.ipynb")
    message = str(info.value)
    assert fragment in message and message.startswith("nb.ipynb: ")
    assert "Declared parameters: alpha (float, default 0.5)" in message


def test_every_problem_is_reported_at_once(contract):
    with pytest.raises(ParameterError) as info:
        validate(contract, {"alpha": "x", "bogus": "1"})
    assert "alpha='x'" in str(info.value) and "'bogus'" in str(info.value)


def test_no_parameters_cell_refuses_values():
    with pytest.raises(ParameterError, match="no cell tagged 'parameters'"):
        validate(Contract((), None), {"a": "1"})
    assert validate(Contract((), None), {}) == {}


def test_syntax_error_in_parameters_cell_reads_the_rest_and_refuses_to_run():
    """As papermill infers what it can (its complex_parameters.ipynb), but a cell that cannot
    execute is refused before any kernel starts."""
    import nbformat

    from cd4ml_nb.params import read_contract

    node = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "a: float = 2.25  # weight\nb = [\n  'x',  # first\n]\nd = a == 3\n= 2\ne = 'after'\n",
        metadata={"tags": ["parameters"]})])
    contract = read_contract(node, "nb.ipynb")
    assert [(p.name, p.type) for p in contract.parameters] == [("a", "float"), ("b", "list"), ("d", "any"),
                                                                ("e", "str")]
    assert contract.get("d").expression == "a == 3" and contract.notes == ("line 6: cannot be read (invalid syntax)",)
    with pytest.raises(NotebookError, match="line 6: cannot be read .* the cell cannot run"):
        validate(contract, {}, where="nb.ipynb")
    assert parse_cell("alpha = = 1") == ()
