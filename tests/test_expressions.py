"""User expressions are parsed without running code (hildlimits._engine.expr): the grammar, its limits,
the SymPy expressions of valid input, and the CLI refusing injection attempts (exit 2)."""

from __future__ import annotations

import doctest
import json
import time

import pytest
import sympy as sp

import hildlimits as hl
import hildlimits._engine.expr as expr_module
from hildlimits._engine.activations import X, get_activation
from hildlimits._engine.expr import parse_expression
from hildlimits._errors import ConfigError

FIELD = "model.teacher_activation"


def parse(text, **kw):
    return parse_expression(text, field=FIELD, variables={"x": X}, **kw)


def refused(text, *fragments):
    with pytest.raises(ConfigError) as info:
        parse(text)
    msg = str(info.value)
    assert msg.startswith(FIELD + ":"), msg
    for fragment in fragments:
        assert fragment in msg, msg
    return msg


# ------------------------------------------------------------------------------- valid input
x = X
VALID = {
    # README, tests, validation scripts
    "x**3 - 3*x": x**3 - 3 * x,
    "sin(x)": sp.sin(x),
    "log(1 + exp(x))": sp.log(1 + sp.exp(x)),
    "sin(x) + x/2": sp.sin(x) + x / 2,
    "x**3-3*x+(x**4-6*x**2+3)": x**4 + x**3 - 6 * x**2 - 3 * x + 3,
    "Heaviside(x)": sp.Heaviside(x),
    # every function and constant
    "exp(-x**2/2)": sp.exp(-(x**2) / 2),
    "sqrt(1 + x**2)": sp.sqrt(1 + x**2),
    "cos(x) + tan(x/10)": sp.cos(x) + sp.tan(x / 10),
    "sinh(x) + cosh(x) + tanh(x)": sp.sinh(x) + sp.cosh(x) + sp.tanh(x),
    "atan(x) + asinh(x)": sp.atan(x) + sp.asinh(x),
    "erf(x/sqrt(2))": sp.erf(x / sp.sqrt(2)),
    "erfc(x)": sp.erfc(x),
    "Abs(x)": sp.Abs(x),
    "abs(x)": sp.Abs(x),
    "sign(x)": sp.sign(x),
    "Heaviside(x, 1/2)": sp.Heaviside(x, sp.Rational(1, 2)),
    "Max(0, x)": sp.Max(0, x),
    "Min(x, 1)": sp.Min(x, 1),
    "pi*x + E": sp.pi * x + sp.E,
    "log(x**2 + 1, 2)": sp.log(x**2 + 1, 2),
    "1/(1 + exp(-x))": 1 / (1 + sp.exp(-x)),
    # numbers as sympy's parse_expr made them: ints exact, 1/2 a Rational, floats Float(text)
    "1/2*x": sp.Rational(1, 2) * x,
    "x/3": sp.Rational(1, 3) * x,
    "2**-1*x": sp.Rational(1, 2) * x,
    "0.5*x": sp.Float("0.5") * x,
    "1e-3*x": sp.Float("1e-3") * x,
    "1_000*x": 1000 * x,
    "x**2.0": x ** sp.Float("2.0"),
    "0.1234567890123456789*x": sp.Float("0.1234567890123456789") * x,
    "-x**2": -(x**2),
    "- -x": x,
    "2**3**2*x": 512 * x,
    "(2**3)**2*x": 64 * x,
    "-2**2*x": -4 * x,
    "2*x/2": x,
    "x/2/3": x / 6,
    "4**(1/2)*x": 2 * x,
    "(x + 1)**3": (x + 1) ** 3,
    "3*(x - 1)*(x + 2)": 3 * (x - 1) * (x + 2),
    "x*0.1 + 0.2 + 0.3": sp.Float("0.1") * x + sp.Float("0.5"),
    "  ((x))  ": x,
}


@pytest.mark.parametrize("text", sorted(VALID))
def test_valid_expressions_parse_to_the_expected_sympy(text):
    got = parse(text)
    assert sp.srepr(got) == sp.srepr(VALID[text]), (got, VALID[text])


def test_numbers_keep_the_literal_precision():
    got = parse("0.1234567890123456789*x")
    assert sp.srepr(got.args[0]) == "Float('0.1234567890123456788996', precision=66)"


def test_activation_of_an_expression_is_as_before():
    act = get_activation("x**3 - 3*x", field="activation", student=True)
    assert act.expr == x**3 - 3 * x and act.name == "x**3 - 3*x"
    assert act.description == "g(x) = x**3 - 3*x (user expression)"
    assert act.derivative(1) == 3 * x**2 - 3


def test_derived_system_of_an_expression_activation_is_unchanged():
    # "x**3 - 3*x" is He3: the same expectations (functions, closed forms, paths) and the same
    # generated source as the registry's he3, up to the header naming the inputs.
    a = hl.derive(hl.Committee(K=1, M=1, activation="x**3 - 3*x", teacher_activation="sin(x)"))
    b = hl.derive(hl.Committee(K=1, M=1, activation="he3", teacher_activation="sin(x)"))

    def entries(s):
        return [(e.funcs, sp.srepr(e.expr), e.method) for e in s.expectations]

    assert entries(a) == entries(b)
    stein, shift = "closed form (Stein's lemma)", "closed form (Stein's lemma, exponential shift)"
    methods = [shift, stein, shift, stein, stein, shift, stein, "closed form (exponential shift)"]
    # the multiset of paths (the order of the expectations is the derivation's internal order)
    assert sorted(e.method for e in a.expectations) == sorted([*methods, shift])
    funcs = {f for e in a.expectations for f in e.funcs}
    assert {3 * x**2 - 3, sp.sin(x)} <= funcs  # g' of the student, the teacher
    assert a.source.splitlines()[5:] == b.source.splitlines()[5:]


def test_other_variables_functions_and_constants():
    yhat, y = sp.symbols("yhat y", real=True)
    got = parse_expression(
        "(yhat - y)**2/2 + log(1 + exp(-y*yhat))", field="loss", variables={"yhat": yhat, "y": y}
    )
    assert got == (yhat - y) ** 2 / 2 + sp.log(1 + sp.exp(-y * yhat))
    with pytest.raises(ConfigError, match=r"loss: .*may only use the variables yhat, y, found 'x'"):
        parse_expression("x*y", field="loss", variables={"yhat": yhat, "y": y})
    with pytest.raises(ConfigError, match="unknown function 'sin'"):
        parse_expression("sin(x)", field="f", variables={"x": X}, functions={"exp": sp.exp})
    with pytest.raises(ConfigError, match="found 'pi'"):
        parse_expression("pi*x", field="f", variables={"x": X}, constants={})


def test_docstring_example():
    assert doctest.testmod(expr_module).failed == 0


# ------------------------------------------------------------------------------- refused input
INJECTIONS = [
    "x + 0*x.diff.__globals__['__builtins__']['__import__']('os').system('touch /tmp/hl-pwned')",
    "__import__('os')",
    "__import__('os').system('true')",
    "().__class__",
    "().__class__.__base__.__subclasses__()",
    "x.__class__",
    "x.diff",
    "x.func(x)",
    "[x][0]",
    "lambda: 1",
    "(lambda: 1)()",
    '"a"',
    "'a'*x",
    "b'x'",
    "f'{x}'",
    "getattr(x, 'diff')",
    "exec('import os')",
    "eval('x')",
    "open('/tmp/hl-pwned', 'w')",
    "compile('1', 'f', 'eval')",
    "globals()",
    "[x for x in (1, 2)]",
    "(x for x in (1,))",
    "{x for x in (1,)}",
    "{x: 1 for x in (1,)}",
    "x if x else 1",
    "x < 1",
    "x == 1",
    "x and 1",
    "x or 1",
    "not x",
    "(y := x)",
    "sin(*[x])",
    "sin(**{'x': 1})",
    "sin(x=1)",
    "Heaviside(x, H0=1)",
    "{x: 1}",
    "{x}",
    "[x]",
    "(x, 1)",
    "x[1:2]",
    "True*x",
    "None",
    "...",
    "1j*x",
    "x ^ 2",
    "x // 2",
    "x % 2",
    "x @ x",
    "x | 1",
    "x & 1",
    "x << 1",
    "~x",
    "_x",
    "__x__",
    "__builtins__",
    "x(1)",
    "pi(x)",
    "sin(x)(x)",
    "(x + 1)(x)",
    "exp*x",
    "Symbol('y')",
    "Function('f')(x)",
    "Integer(2)*x",
    "foo(x)",
    "x + y",
    "await x",
]


@pytest.mark.parametrize("text", INJECTIONS)
def test_constructs_outside_the_grammar_are_refused(text):
    msg = refused(text)
    assert repr(text)[:40].rstrip("'\"") in msg
    assert "Traceback" not in msg


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("x.diff", "uses an attribute ('.diff'), which is not allowed; allowed: numbers, x, pi"),
        ("[x][0]", "uses a subscript"),
        ("lambda: 1", "uses a lambda"),
        ('"a"', "uses a string"),
        ("f'{x}'", "uses an f-string"),
        ("[x for x in (1,)]", "uses a comprehension"),
        ("x if x else 1", "uses a conditional expression"),
        ("x < 1", "uses a comparison"),
        ("x and 1", "uses a boolean operator"),
        ("(y := x)", "uses an assignment expression"),
        ("sin(*[x])", "uses a starred argument"),
        ("sin(x=1)", "uses a keyword argument ('x=...')"),
        ("(x, 1)", "uses a tuple"),
        ("True*x", "uses the constant True"),
        ("1j*x", "uses an imaginary number"),
        ("x ^ 2", "the operator '^' (write powers as **)"),
        ("__import__('os')", "uses the name '__import__'"),
        ("getattr(x, 'diff')", "unknown function 'getattr'"),
        ("eval('x')", "unknown function 'eval'"),
        ("exp*x", "uses the function 'exp' without calling it"),
        ("x(1)", "calls 'x', which is not a function"),
        ("x + y", "may only use the variable x, found 'y'"),
        ("sin(x, x)", "cannot be evaluated (TypeError"),
    ],
)
def test_messages_say_what_is_not_allowed(text, fragment):
    refused(text, fragment)


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("erf(x", "cannot parse 'erf(x' as an expression in x ('(' was never closed)"),
        ("x)", "cannot parse 'x)' as an expression in x (unmatched ')')"),
        ("x +", "cannot parse 'x +'"),
        ("x\n+ 1", "cannot parse"),
        ("", "is empty"),
        ("   ", "is empty"),
    ],
)
def test_unbalanced_and_empty_text(text, fragment):
    refused(text, fragment)


@pytest.mark.parametrize(
    "text,char",
    [
        ("\uff58**2", "U+FF58"),  # fullwidth x (Python would normalise it to x)
        ("x \u2212 1", "U+2212"),  # minus sign
        ("\u00e9 + x", "U+00E9"),
        ("x\x00", "U+0000"),
        ("x + \udcff", "U+DCFF"),  # a lone surrogate, as from undecodable bytes
        ("x\x1b[2J", "U+001B"),
    ],
)
def test_non_ascii_and_control_characters(text, char):
    refused(text, char, "only ASCII")


def test_a_non_string_is_refused():
    with pytest.raises(ConfigError, match=FIELD):
        parse(b"x")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------- limits
def test_a_sum_of_5001_terms_parses():
    # Python's own parser gives up on such a chain (RecursionError); it is split at the top-level
    # + and - and built as one Add
    start = time.perf_counter()
    assert parse("+".join(["x"] * 5001)) == 5001 * x
    assert parse("-".join(["x"] * 3000)) == -2998 * x
    assert time.perf_counter() - start < 5


def test_long_sums_equal_the_sequential_build():
    text = " + ".join(f"{k}*x**{k % 7} - 0.5*sin({k}*x)" for k in range(40))
    fast = parse(text)
    expr_module.LONG_SUM, saved = 10**9, expr_module.LONG_SUM
    try:
        slow = parse(text)
    finally:
        expr_module.LONG_SUM = saved
    assert sp.srepr(fast) == sp.srepr(slow)
    exact = " + ".join(f"{k}*x**{k % 7}/3 - sin({k}*x)" for k in range(40))
    fast = parse(exact)
    expr_module.LONG_SUM = 10**9
    try:
        slow = parse(exact)
    finally:
        expr_module.LONG_SUM = saved
    assert sp.srepr(fast) == sp.srepr(slow)


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("10**10**10*x", "exponent above 1000"),
        ("x*2**1001", "exponent above 1000"),
        ("(10**999)**(999/2)*x", "fractional power"),
        ("(2*x)**(10**10)", "digits (at most 4000)"),
        ("x*9**999*9**999*9**999*9**999*9**999", "more than 4000 digits"),
        ("(9**100 + 7)**(999/1000)*x", "fractional power"),
        ("sqrt(9**999 + 7)*x", "fractional power"),
        ("sqrt((9**999 + 7)*x)", "fractional power"),
        ("*".join(f"sqrt(7**{50 * k} + 1)" for k in range(1, 9)) + "*x", "fractional power"),
        ("x*1" + "0" * 200, "number literal of 201 characters"),
        ("x" * 20001, "is too long (20001 characters; at most 20000)"),
        ("x" + "**x" * 60, "nested too deeply (more than 50 levels)"),
        ("x" + "**x" * 3000, "nested too deeply"),
        ("-" * 9000 + "x", "nested too deeply"),
        ("exp(" * 60 + "x" + ")" * 60, "nested too deeply"),
        ("*".join(["x"] * 5000), "nested too deeply"),
    ],
)
def test_limits(text, fragment):
    start = time.perf_counter()
    msg = refused(text, fragment)
    assert time.perf_counter() - start < 2
    assert len(msg) < 1000  # long input is shown shortened


def test_limits_leave_ordinary_numbers_alone():
    assert parse("10**100*x") == sp.Integer(10) ** 100 * x
    assert parse("(1/2)**(3/2)*x") == sp.sqrt(2) * x / 4
    assert parse("2**1000*x") == sp.Integer(2) ** 1000 * x
    assert parse("1.5**1000.0*x") == sp.Float(1.5) ** sp.Float(1000.0) * x


# ------------------------------------------------------------------------------ through the CLI
COMMITTEE = """\
[model]
K = 1
M = 1
activation = "erf"
teacher_activation = {payload}
train_second_layer = true
noise = 0.1
weight_decay = 0.0

[training]
lr = 0.5
lr_second_layer = 0.5

[init]
Q = [[0.5]]
R = [[0.3]]
T = [[1.0]]
v = [0.5]
v_teacher = [1.0]

[solve]
t1 = 1.0
n_save = 3
spacing = "linear"
"""

MEANFIELD = """\
[model]
kind = "meanfield"
M = 1
activation = "erf"
teacher_activation = {payload}
train_second_layer = true
noise = 0.0

[training]
lr = 0.05
lr_second_layer = 0.05

[init]
T = [[1.0]]
v_teacher = [1.0]
q = 1.0
a_mean = 0.0
a_std = 1.0
particles = 16

[solve]
t1 = 1.0
n_save = 3
spacing = "linear"
"""


def _payloads(marker):
    m = str(marker)
    return [
        f"x + 0*x.diff.__globals__['__builtins__']['__import__']('os').system('touch {m}')",
        f"x + 0*x.func.__globals__['__builtins__']['open']('{m}', 'w').close()",
        f"__import__('os').system('touch {m}')",
        f"x + 0*open('{m}', 'w')",
    ]


@pytest.mark.parametrize("kind", ["committee", "meanfield"])
@pytest.mark.parametrize("command", ["derive", "solve"])
def test_cli_refuses_code_in_a_config(tmp_path, capsys, kind, command):
    from hildlimits._cli import main

    marker = tmp_path / "pwned"
    template = COMMITTEE if kind == "committee" else MEANFIELD
    for payload in _payloads(marker):
        cfg = tmp_path / "c.toml"
        cfg.write_text(template.format(payload=json.dumps(payload)))
        args = [command, str(cfg)] + (
            ["--out", str(tmp_path / "o.json")] if command == "solve" else []
        )
        assert main(args) == 2
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), err
        assert "teacher_activation" in err
        assert "not allowed" in err or "unknown function" in err
        assert "Traceback" not in err
        assert not marker.exists()
        assert not (tmp_path / "o.json").exists()
