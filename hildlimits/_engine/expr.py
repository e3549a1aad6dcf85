"""Safe parsing of user expressions (activations, and later losses and labels) into SymPy.

A config must never run code. :func:`parse_expression` therefore never evaluates the text: it
parses it with :func:`ast.parse` (syntax only), checks every node of the tree against a small
grammar (numbers, the allowed variables and constants, ``+ - * / **``, calls of whitelisted
functions by name), and only then builds the SymPy expression from the checked tree. The result
equals what ``sympy.parse_expr`` with the standard transformations gave for the same text
(integer literals become ``Integer``, float literals ``Float`` of their text, so ``1/2`` is
``Rational(1, 2)``), with Python's precedence and left-to-right evaluation order.
"""

from __future__ import annotations

import ast
import io
import math
import tokenize
import warnings
from collections.abc import Callable, Mapping
from typing import NoReturn

import sympy as sp

from hildlimits._errors import ConfigError

#: Functions an expression may call, by name (``abs`` is an alias of ``Abs``).
FUNCTIONS: dict[str, Callable] = {
    **{
        f.__name__: f
        for f in (
            sp.exp,
            sp.log,
            sp.sqrt,
            sp.sin,
            sp.cos,
            sp.tan,
            sp.sinh,
            sp.cosh,
            sp.tanh,
            sp.atan,
            sp.asinh,
            sp.erf,
            sp.erfc,
            sp.Abs,
            sp.sign,
            sp.Heaviside,
            sp.Max,
            sp.Min,
        )
    },
    "abs": sp.Abs,
}
#: Named constants an expression may use.
CONSTANTS: dict[str, sp.Expr] = {"pi": sp.pi, "E": sp.E}

MAX_LENGTH = 20_000  # characters of text
MAX_NODES = 20_000  # syntax-tree nodes
MAX_DEPTH = 50  # nesting levels; a chain a + b - c + ... (or a * b / c * ...) is one level
MAX_LITERAL = 100  # characters of one number literal
MAX_EXPONENT = 1000  # |exponent| of a power of two numbers
MAX_DIGITS = 4000  # decimal digits of an exact number (numerator or denominator)
MAX_ROOT_DIGITS = 300  # digits of a number under a fractional power (SymPy factors it)

_LOG10_2 = math.log10(2)
_OPERATORS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**"}
_BAD_OPERATORS = {
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.MatMult: "@",
    ast.BitXor: "^",
    ast.BitAnd: "&",
    ast.BitOr: "|",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.Invert: "~",
    ast.Not: "not",
}
_SUMS, _PRODUCTS = (ast.Add, ast.Sub), (ast.Mult, ast.Div)
_FORBIDDEN = {
    ast.Attribute: "an attribute",
    ast.Subscript: "a subscript",
    ast.Slice: "a slice",
    ast.Lambda: "a lambda",
    ast.ListComp: "a comprehension",
    ast.SetComp: "a comprehension",
    ast.DictComp: "a comprehension",
    ast.GeneratorExp: "a generator expression",
    ast.JoinedStr: "an f-string",
    ast.FormattedValue: "an f-string",
    ast.Starred: "a starred argument",
    ast.NamedExpr: "an assignment expression (:=)",
    ast.Compare: "a comparison",
    ast.BoolOp: "a boolean operator (and/or)",
    ast.IfExp: "a conditional expression (... if ... else ...)",
    ast.Dict: "a dict",
    ast.List: "a list",
    ast.Set: "a set",
    ast.Tuple: "a tuple",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
}


def parse_expression(
    text: object,
    *,
    field: str,
    variables: Mapping[str, sp.Expr],
    functions: Mapping[str, Callable] | None = None,
    constants: Mapping[str, sp.Expr] | None = None,
) -> sp.Expr:
    """Parse ``text`` into a SymPy expression without evaluating any of it as Python.

    Allowed: int and float literals, the names in ``variables`` and ``constants``, the operators
    ``+ - * / **`` (binary) and ``+ -`` (unary), parentheses, and calls ``f(a, b, ...)`` of the
    names in ``functions`` with positional arguments. Everything else (attributes, subscripts,
    strings, lambdas, comprehensions, comparisons, keyword arguments, ...) is refused before
    anything is built.

    Args:
        text: the expression, e.g. ``"x**3 - 3*x"`` or ``"log(1 + exp(x))"``.
        field: the config entry named in error messages, e.g. ``"model.activation"``.
        variables: name -> SymPy symbol, e.g. ``{"x": X}``.
        functions: name -> callable building a SymPy expression (default :data:`FUNCTIONS`).
        constants: name -> SymPy constant (default :data:`CONSTANTS`: ``pi``, ``E``).

    Raises:
        ConfigError: naming ``field`` and the text, for anything outside the grammar, a syntax
            error, or an input beyond the limits (:data:`MAX_LENGTH` characters,
            :data:`MAX_NODES` nodes, :data:`MAX_DEPTH` nesting levels, number literals of more
            than :data:`MAX_LITERAL` characters, a power of a number with an exponent above
            :data:`MAX_EXPONENT` or a result of more than :data:`MAX_DIGITS` digits, a
            fractional power SymPy would factor as more than :data:`MAX_ROOT_DIGITS` digits).

    Example:
        >>> x = sp.Symbol("x", real=True)
        >>> parse_expression("x**3 - 3*x", field="model.activation", variables={"x": x})
        x**3 - 3*x
        >>> parse_expression("x.diff", field="model.activation", variables={"x": x})
        ... # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        hildlimits._errors.ConfigError: model.activation: expression 'x.diff' uses an attribute ('.diff'), ...
    """
    grammar = _Grammar(
        field,
        text,
        dict(variables),
        dict(FUNCTIONS if functions is None else functions),
        dict(CONSTANTS if constants is None else constants),
    )
    if not isinstance(text, str):
        raise ConfigError(f"{field}: expected an expression string, got {_show(text)}")
    if len(text) > MAX_LENGTH:
        grammar.fail(f"is too long ({len(text)} characters; at most {MAX_LENGTH})")
    bad = next((c for c in text if not (" " <= c <= "~" or c in "\t\n\r")), None)
    if bad is not None:
        grammar.fail(
            f"contains the character {bad!r} (U+{ord(bad):04X}); only ASCII letters, digits, "
            "operators and parentheses are allowed"
        )
    src = text.strip()
    if not src:
        grammar.fail("is empty")
    body, literals = _parse(grammar, src)
    grammar.check(body)
    expr = grammar.build(body, literals)
    if not isinstance(expr, sp.Expr):
        grammar.fail("is not an expression")
    for number in expr.atoms(sp.Rational):
        grammar.check_size(number)
    return expr


def _show(text: object) -> str:
    shown = repr(text)
    if len(shown) <= 120 or not isinstance(text, str):
        return _short(shown, 120)
    return repr(text[:100]) + f" ... ({len(text)} characters)"


class _Grammar:
    def __init__(self, field, text, variables, functions, constants):
        self.field, self.text = field, text
        self.variables, self.functions, self.constants = variables, functions, constants

    # ------------------------------------------------------------------ messages
    def fail(self, what: str) -> NoReturn:
        raise ConfigError(f"{self.field}: expression {_show(self.text)} {what}")

    def cannot_parse(self, why: str) -> NoReturn:
        raise ConfigError(
            f"{self.field}: cannot parse {_show(self.text)} as an expression in "
            f"{', '.join(self.variables)} ({why})"
        )

    def allowed(self) -> str:
        names = ", ".join([*self.variables, *self.constants])
        return (
            f"allowed: numbers, {names}, + - * / **, parentheses, and calls of "
            f"{', '.join(self.functions)}"
        )

    def refuse(self, what: str, shown: str = "") -> NoReturn:
        shown = f" ({shown})" if shown else ""
        self.fail(f"uses {what}{shown}, which is not allowed; {self.allowed()}")

    def variables_text(self) -> str:
        names = list(self.variables)
        return f"the variable{'s' if len(names) != 1 else ''} {', '.join(names)}"

    # ------------------------------------------------------------------ checking
    def check(self, body: ast.AST) -> None:
        """Walk the tree (no recursion) and refuse anything outside the grammar."""
        stack = [(body, 1)]
        count = 0
        while stack:
            node, depth = stack.pop()
            count += 1
            if count > MAX_NODES:
                self.fail(f"is too large (more than {MAX_NODES} parts)")
            if depth > MAX_DEPTH:
                self.fail(f"is nested too deeply (more than {MAX_DEPTH} levels)")
            children = self._check_node(node)
            for child in reversed(children):
                flat = (
                    isinstance(node, ast.BinOp)
                    and child is node.left
                    and isinstance(child, ast.BinOp)
                    and any(
                        isinstance(node.op, g) and isinstance(child.op, g)
                        for g in (_SUMS, _PRODUCTS)
                    )
                )
                stack.append((child, depth if flat else depth + 1))

    def _check_node(self, node: ast.AST) -> list[ast.AST]:
        if isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, bool) or value is None or value is Ellipsis:
                self.refuse(f"the constant {value!r}")
            if isinstance(value, (str, bytes)):
                self.refuse("a string", _short(repr(value)))
            if isinstance(value, complex):
                self.refuse("an imaginary number", repr(value))
            if not isinstance(value, (int, float)):
                self.refuse(f"the constant {_short(repr(value))}")
            return []
        if isinstance(node, ast.Name):
            self._check_name(node.id, called=False)
            return []
        if isinstance(node, ast.BinOp):
            if type(node.op) not in _OPERATORS:
                self.refuse(_operator(node.op))
            return [node.left, node.right]
        if isinstance(node, ast.UnaryOp):
            if not isinstance(node.op, (ast.UAdd, ast.USub)):
                self.refuse(_operator(node.op))
            return [node.operand]
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name):
                what = _forbidden(node.func)
                if what is not None:
                    self.refuse(*what)
                self.refuse("a call of something that is not a function name", _segment(node))
            self._check_name(node.func.id, called=True)
            for kw in node.keywords:
                if kw.arg is None:
                    self.refuse("a ** argument", "'**...'")
                self.refuse("a keyword argument", f"'{kw.arg}=...'")
            return list(node.args)
        what = _forbidden(node)
        self.refuse(*(what or (f"a {type(node).__name__}", _segment(node))))

    def _check_name(self, name: str, *, called: bool) -> None:
        if name.startswith("_"):
            self.refuse(f"the name {name!r}")
        if called:
            if name in self.functions:
                return
            if name in self.variables or name in self.constants:
                self.fail(f"calls {name!r}, which is not a function; {self.allowed()}")
            self.fail(f"uses an unknown function {name!r} (known: {', '.join(self.functions)})")
        if name in self.variables or name in self.constants:
            return
        if name in self.functions:
            self.fail(f"uses the function {name!r} without calling it (write {name}(...))")
        self.fail(f"may only use {self.variables_text()}, found {name!r}; {self.allowed()}")

    # ------------------------------------------------------------------ building
    def build(self, body: ast.AST, literals: dict[int, str]) -> sp.Expr:
        """The SymPy expression of a checked tree (post-order, no recursion)."""
        values: list = []
        stack: list[tuple[ast.AST, bool]] = [(body, False)]
        while stack:
            node, ready = stack.pop()
            if isinstance(node, ast.Constant):
                values.append(self._number(node, literals))
            elif isinstance(node, ast.Name):
                values.append(self.variables.get(node.id, self.constants.get(node.id)))
            elif isinstance(node, _LongSum):
                terms = values[len(values) - len(node.signs) :]
                del values[len(values) - len(node.signs) :]
                values.append(self._add(terms, node.signs))
            elif not ready and (chain := _sum_chain(node)) is not None:
                # a long sum at once (sequential a + b + ... is quadratic in SymPy)
                stack.append((_LongSum([isinstance(n.op, ast.Add) for n in chain]), True))
                operands = [chain[-1].left, *(n.right for n in reversed(chain))]
                stack.extend((c, False) for c in reversed(operands))
            elif not ready:
                stack.append((node, True))
                children = (
                    [node.left, node.right]
                    if isinstance(node, ast.BinOp)
                    else [node.operand]
                    if isinstance(node, ast.UnaryOp)
                    else node.args
                )
                stack.extend((c, False) for c in reversed(children))
            else:
                values.append(self._apply(node, values))
        (result,) = values
        return result

    def _add(self, terms: list, signs: list[bool]) -> sp.Expr:
        """``t0 + t1 - t2 + ...``: one ``Add`` (``a - b`` is ``Add(a, -b)``) if exact, else (floats
        round differently in another order) left to right, as Python would."""
        terms = [t if plus else -t for t, plus in zip(terms, signs, strict=True)]
        try:
            if any(t.has(sp.Float) for t in terms):
                result = terms[0]
                for t in terms[1:]:
                    result = result + t
                    if isinstance(result, sp.Rational):
                        self.check_size(result)
            else:
                result = sp.Add(*terms)
        except Exception as exc:  # pragma: no cover - SymPy's own errors
            self.fail(f"cannot be evaluated ({type(exc).__name__}: {_short(str(exc))})")
        if isinstance(result, sp.Rational):
            self.check_size(result)
        return result

    def _number(self, node: ast.Constant, literals: dict[int, str]) -> sp.Expr:
        literal = literals.get(id(node), "")
        if len(literal) > MAX_LITERAL:
            self.fail(
                f"has a number literal of {len(literal)} characters (at most {MAX_LITERAL}; "
                "write large numbers as powers, e.g. 10**200)"
            )
        if isinstance(node.value, int):
            return sp.Integer(node.value)
        try:  # as sympy's auto_number: Float of the literal's text (its precision)
            return sp.Float(literal)
        except ValueError:
            return sp.Float(node.value)

    def _apply(self, node: ast.AST, values: list) -> sp.Expr:
        try:
            if isinstance(node, ast.UnaryOp):
                operand = values.pop()
                result = -operand if isinstance(node.op, ast.USub) else +operand
            elif isinstance(node, ast.BinOp):
                right = values.pop()
                left = values.pop()
                op = type(node.op)
                if op is ast.Pow:
                    self._check_power(left, right)
                    result = left**right
                elif op is ast.Add:
                    result = left + right
                elif op is ast.Sub:
                    result = left - right
                elif op is ast.Mult:
                    result = left * right
                else:
                    result = left / right
            else:  # Call
                args = [values.pop() for _ in node.args][::-1]
                function = self.functions[node.func.id]
                if function is sp.sqrt and len(args) == 1:
                    self._check_power(args[0], sp.S.Half)
                result = function(*args)
        except ConfigError:
            raise
        except Exception as exc:  # a checked tree: only SymPy's own errors (arity, ...) remain
            self.fail(f"cannot be evaluated ({type(exc).__name__}: {_short(str(exc))})")
        if isinstance(result, sp.Rational):
            self.check_size(result)
        elif isinstance(result, (sp.Mul, sp.Pow)):
            self._check_roots(result)
        return result

    def _check_power(self, base, exponent) -> None:
        """Refuse a power whose evaluation would be huge, before SymPy evaluates it.

        SymPy computes ``n**k`` exactly for a number ``n`` (also as a coefficient: ``(n*x)**k``
        is ``n**k * x**k``), and for ``n**(p/q)`` factors ``n**p`` to pull out perfect powers.
        """
        if not isinstance(exponent, sp.Number) or not exponent.is_finite:
            return
        if isinstance(base, sp.Number) and abs(exponent) > MAX_EXPONENT:
            self.fail(
                f"raises a number to a power with an exponent above {MAX_EXPONENT} in absolute "
                "value, which is not allowed"
            )
        if not isinstance(exponent, sp.Rational):
            return  # a float power is evaluated in floating point
        digits = _digits(base) * abs(exponent.p)
        if exponent.q == 1 and digits > MAX_DIGITS:
            self.fail(
                f"raises a number to a power with about {digits:.0f} digits (at most "
                f"{MAX_DIGITS}), which is not allowed"
            )
        if exponent.q != 1 and digits > MAX_ROOT_DIGITS:
            self.fail(
                "raises a number to a fractional power that SymPy would factor as a number of "
                f"about {digits:.0f} digits (at most {MAX_ROOT_DIGITS}), which is not allowed"
            )

    def _check_roots(self, result: sp.Expr) -> None:
        """Products merge roots of numbers (``sqrt(a)*sqrt(b)`` is ``sqrt(a*b)``): bound them."""
        for term in (result, *result.args) if isinstance(result, sp.Mul) else (result,):
            if (
                isinstance(term, sp.Pow)
                and isinstance(term.base, sp.Rational)
                and isinstance(term.exp, sp.Rational)
                and _digits(term.base) > MAX_ROOT_DIGITS
            ):
                self.fail(
                    "raises a number to a fractional power that SymPy would factor as a number of "
                    f"more than {MAX_ROOT_DIGITS} digits, which is not allowed"
                )

    def check_size(self, number: sp.Rational) -> None:
        if _digits(number) > MAX_DIGITS:
            self.fail(f"produces a number of more than {MAX_DIGITS} digits, which is not allowed")


def _digits(expr: sp.Expr) -> float:
    """About the decimal digits of the largest numerator or denominator of a number in ``expr``."""
    numbers = [expr] if isinstance(expr, sp.Rational) else expr.atoms(sp.Rational)
    bits = max((max(abs(n.p).bit_length(), n.q.bit_length()) for n in numbers), default=1)
    return (bits - 1) * _LOG10_2


LONG_SUM = 64  # a chain of at least this many + / - is built with one Add


class _LongSum:
    def __init__(self, signs: list[bool]):
        self.signs = [True, *signs[::-1]]  # one per term, left to right


def _sum_chain(node: ast.AST) -> list[ast.BinOp] | None:
    """The BinOps of a left-nested chain ``a + b - c ...`` from ``node`` down, if long."""
    chain = []
    while isinstance(node, ast.BinOp) and isinstance(node.op, _SUMS):
        chain.append(node)
        node = node.left
    return chain if len(chain) >= LONG_SUM else None


def _short(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def _forbidden(node: ast.AST) -> tuple[str, str] | None:
    """(description, what it looks like) of a node type outside the grammar, else None."""
    for kind, what in _FORBIDDEN.items():
        if isinstance(node, kind):
            if isinstance(node, ast.Attribute):
                return what, f"'.{node.attr}'"
            shown = {
                ast.Subscript: "'[...]'",
                ast.Lambda: "'lambda ...'",
                ast.Starred: "'*...'",
                ast.JoinedStr: "f'...'",
            }.get(kind, "")
            return what, shown or _segment(node)
    return None


def _segment(node: ast.AST) -> str:
    """A short rendering of ``node`` for messages (never evaluated)."""
    try:
        return repr(_short(ast.unparse(node)))
    except Exception:  # pragma: no cover - display only
        return type(node).__name__


def _operator(op: ast.AST) -> str:
    if isinstance(op, ast.BitXor):
        return "the operator '^' (write powers as **)"
    return f"the operator {_BAD_OPERATORS.get(type(op), type(op).__name__)!r}"


# ---------------------------------------------------------------------- parsing
def _parse(grammar: _Grammar, src: str) -> tuple[ast.AST, dict[int, str]]:
    """The syntax tree of ``src`` and the text of each number literal (by node id).

    Python's parser gives up on very long chains (a sum of ~3000 terms exceeds its AST depth
    limit); then the text is cut at its top-level binary ``+``/``-`` and each term is parsed on
    its own, the terms joined left to right as Python would.
    """
    literals: dict[int, str] = {}
    try:
        return _parse_piece(grammar, src, literals), literals
    except _TooDeep:
        pass
    terms = _split_sum(grammar, src)
    if len(terms) == 1:
        grammar.fail(f"is nested too deeply (more than {MAX_DEPTH} levels)")
    body = None
    for op, start, end in terms:
        try:
            term = _parse_piece(grammar, src[start:end], literals)
        except _TooDeep:
            grammar.fail(f"is nested too deeply (more than {MAX_DEPTH} levels)")
        body = term if body is None else ast.BinOp(left=body, op=op, right=term)
    return body, literals


class _TooDeep(Exception):
    pass


def _parse_piece(grammar: _Grammar, piece: str, literals: dict) -> ast.AST:
    piece = piece.strip()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. SyntaxWarning for "1(x)"
            tree = ast.parse(piece, mode="eval")
    except (RecursionError, MemoryError):
        raise _TooDeep from None
    except SyntaxError as exc:
        grammar.cannot_parse(exc.msg)
    except ValueError as exc:  # e.g. an integer literal of more than 4300 digits
        grammar.cannot_parse(_short(str(exc), 80))
    # number literals' own text (their precision, as sympy's parse_expr keeps it)
    starts = [0]
    for line in piece.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    for node in _walk(tree.body):
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            if node.lineno == node.end_lineno:
                a = starts[node.lineno - 1] + node.col_offset
                b = starts[node.lineno - 1] + node.end_col_offset
                literals[id(node)] = piece[a:b]
    return tree.body


def _walk(node: ast.AST):
    stack = [node]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(ast.iter_child_nodes(node))


def _split_sum(grammar: _Grammar, src: str) -> list[tuple[ast.operator | None, int, int]]:
    """(operator, start, end) of the terms of ``src`` at its top-level binary ``+``/``-``."""
    starts = [0]
    for line in src.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    terms: list[tuple[ast.operator | None, int, int]] = []
    op, begin, level, prev = None, 0, 0, None
    try:
        for tok in tokenize.generate_tokens(io.StringIO(src).readline):
            if tok.type in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT, tokenize.ENDMARKER):
                continue
            if tok.type == tokenize.OP and tok.string in "([{":
                level += 1
            elif tok.type == tokenize.OP and tok.string in ")]}":
                level -= 1
            elif (
                level == 0
                and tok.type == tokenize.OP
                and tok.string in "+-"
                and prev is not None
                and (prev.type in (tokenize.NAME, tokenize.NUMBER) or prev.string in ")]}")
            ):
                at = starts[tok.start[0] - 1] + tok.start[1]
                terms.append((op, begin, at))
                op, begin = (ast.Add() if tok.string == "+" else ast.Sub()), at + 1
            prev = tok
    except (tokenize.TokenError, SyntaxError) as exc:
        grammar.cannot_parse(_short(str(exc), 80))
    terms.append((op, begin, len(src)))
    return terms
