"""Code generation: an :class:`~hildlimits.ODESystem` becomes the source of a Python module with
JAX functions ``vector_field(t, y, args)`` and one function per observable (``risk(y, args)``).

Each Gaussian expectation becomes a scalar function of the covariance entries (SymPy CSE, JAX
printer with ``erf`` mapped to ``jax.scipy.special.erf``); each template term becomes one broadcast
evaluation on a :class:`~hildlimits._engine.runtime.Grid`, so the source does not grow with ``K``, ``M``.
"""

from __future__ import annotations

import hashlib
import json
import linecache
import types

import sympy as sp
from sympy.printing.numpy import JaxPrinter

from hildlimits._engine import symbolic as S
from hildlimits._version import __version__

_RUNTIME_NAMES = (
    "Grid",
    "asin",
    "gauss_hermite_fields",
    "kinked_gauss_fields",
    "least_determined",
    "overlap_matrix",
    "price_nodes",
    "scale_mixture_nodes",
    "trailing",
)
_IMPORTS = (
    "import jax",
    "import jax.numpy as jnp",
    "import jax.scipy.special",
    "",
    "from hildlimits._engine.runtime import (",
    *[f"    {name}," for name in _RUNTIME_NAMES],
    ")",
)
"""Header of every generated module: the names the printed code calls."""

_PARAM_NAMES = {S.v: "v", S.vs: "v_teacher", S.Q: "Q", S.R: "R", S.T: "T"}
_SCALARS = {
    S.eta: "eta",
    S.eta_v: "eta_v",
    S.sigma: "sigma",
    S.kappa: "kappa",
    S.batch: "batch",
}


class _Printer(JaxPrinter):
    """JAX printer: ``erf`` from ``jax.scipy.special``; square roots and ``asin`` guarded against
    rounding just outside their domain (singular covariances of coincident units); numerical
    expectations become calls of generated quadrature functions collected in ``primitives``."""

    def __init__(self, primitives: dict | None = None):
        super().__init__()
        self.primitives = {} if primitives is None else primitives

    def _print_erf(self, expr):
        return f"jax.scipy.special.erf({self._print(expr.args[0])})"

    def _print_Pow(self, expr, rational=False):
        e = expr.exp
        if e.is_Rational and e.q == 2:
            root = f"jnp.sqrt(jnp.maximum({self._print(expr.base)}, 0))"
            return root if e.p == 1 else f"{root}**({e.p})"
        return super()._print_Pow(expr, rational=rational)

    def _print_Max(self, expr):
        return self._reduce("jnp.maximum", expr.args)

    def _print_Min(self, expr):
        return self._reduce("jnp.minimum", expr.args)

    def _reduce(self, fn: str, args) -> str:
        out = self._print(args[0])
        for a in args[1:]:
            out = f"{fn}({out}, {self._print(a)})"
        return out

    def _print_softplus(self, expr):
        return f"jax.nn.softplus({self._print(expr.args[0])})"

    def _print_sigmoid(self, expr):
        return f"jax.nn.sigmoid({self._print(expr.args[0])})"

    def _print_asin(self, expr):
        return f"asin({self._print(expr.args[0])})"

    def _define(self, expr, kind: str, definer) -> tuple[str, int]:
        """Name of the generated function of a numerical expectation (one per distinct
        functions/nodes; defined on first use) and the number of leading non-covariance
        arguments."""
        skip = 3 if kind in ("price", "mix") else 2
        key = kind + sp.srepr(expr.args[:skip])
        if key not in self.primitives:
            name = f"{kind}{len(self.primitives)}"
            self.primitives[key] = (name, definer(name))
        return self.primitives[key][0], skip

    def _call(self, expr, kind: str, definer, extra=()) -> str:
        """Call of the generated function; its arguments are the covariance entries (then
        ``extra``)."""
        name, skip = self._define(expr, kind, definer)
        return f"{name}({', '.join(self._print(a) for a in [*expr.args[skip:], *extra])})"

    def primitive_name(self, call) -> str:
        """Name of the generated function of a Price-integral call."""
        return self._define(call, "price", lambda name: _price_function(name, call))[0]

    def _print_PriceIntegral(self, expr):
        # erf scales that are scale-mixture symbols are passed in (arrays over the mixture nodes)
        return self._call(
            expr, "price", lambda name: _price_function(name, expr), _mixture_symbols(expr)
        )

    def _print_GaussHermite(self, expr):
        return self._call(expr, "gh", lambda name: _gh_function(name, expr))

    def _print_ScaleMixture(self, expr):
        return self._call(expr, "mix", lambda name: _mixture_function(name, expr, self))


def _print(expr: sp.Expr, printer: _Printer | None = None) -> str:
    return (printer or _Printer()).doprint(expr)


def _numerical_calls(exprs) -> list:
    """The numerical-expectation calls in ``exprs``; the ``n``-th is held in ``q{n}``."""
    from hildlimits._engine.gaussian import GaussHermite, PriceIntegral, ScaleMixture

    calls = set().union(*[e.atoms(PriceIntegral, GaussHermite, ScaleMixture) for e in exprs])
    return sorted(calls, key=str)


def _cse_body(
    exprs, printer, result: str, given: frozenset = frozenset(), target: str = "return "
) -> list[str]:
    """Body lines: numerical calls held in ``q0, q1, ...`` (those in ``given`` only when the
    caller did not pass their value), SymPy CSE, then ``target`` (``return`` by default, or an
    assignment) followed by ``result`` formatted with the reduced expressions."""
    holders = {c: sp.Symbol(f"q{n}") for n, c in enumerate(_numerical_calls(exprs))}
    exprs = [e.xreplace(holders) for e in exprs]
    lines = []
    for c, h in holders.items():
        if h.name in given:
            lines += [f"    if {h} is None:", f"        {h} = {_print(c, printer)}"]
        else:
            lines.append(f"    {h} = {_print(c, printer)}")
    replacements, reduced = sp.cse(exprs, symbols=sp.numbered_symbols("t"))
    lines += [f"    {sym} = {_print(val, printer)}" for sym, val in replacements]
    lines.append(f"    {target}{result.format(*[_print(r, printer) for r in reduced])}")
    return lines


_WEIGHTED_SUM = "jnp.sum(weights * ({0}), axis=-1)"
"""Quadrature of an integrand over the trailing node axis."""


def _mixture_symbols(call) -> list[sp.Symbol]:
    """Free symbols of a Price-integral call's erf scales (scale-mixture variables), by name."""
    return sorted(set().union(*[b.free_symbols for b in call.args[1]]), key=lambda b: b.name)


def _price_function(name: str, call) -> list[str]:
    from hildlimits._engine.gaussian import price_integrand

    s = sp.Symbol("s", real=True)
    terms, syms = price_integrand(call, s)
    n = int(call.args[2])
    kinds = ", ".join(str(k) for k in call.args[0])
    names = ", ".join(x.name for x in [*syms, *_mixture_symbols(call)])
    lines = [
        f"def {name}({names}):",
        f'    """E[u_0 u_1 u_2 u_3], u = ({kinds}), by the Price line integral '
        f'({n} Gauss-Legendre nodes per pair)."""',
    ]
    # sign(z_a) does not change when z_a is scaled: give sign fields unit variance (a shorter
    # integrand; the diagonal entries drop out)
    unit = [a for a, kind in enumerate(call.args[0]) if str(kind) == "sign"]
    if unit:
        lines.append(
            f"    {', '.join(f'n{a}' for a in unit)} = "
            f"{', '.join(f'1 / jnp.sqrt(C_{a}{a})' for a in unit)}"
        )
        scaled = [(a, b) for a in range(4) for b in range(a + 1, 4) if a in unit or b in unit]
        lines.append(
            f"    {', '.join(f'C_{a}{b}' for a, b in scaled)} = "
            + ", ".join(
                f"C_{a}{b}" + "".join(f" * n{c}" for c in (a, b) if c in unit) for a, b in scaled
            )
        )
        ones = {x: sp.Integer(1) for x in syms if x.name[2] == x.name[3] and int(x.name[2]) in unit}
        terms = [(pair, integrand.xreplace(ones)) for pair, integrand in terms]
    lines += [f"    {names} = trailing(({names},))", "    total = 0.0"]
    for (a, b), integrand in terms:
        caa, cbb = ("1.0" if c in unit else f"C_{c}{c}" for c in (a, b))
        lines.append(f"    s, weights = price_nodes(C_{a}{b}, {caa}, {cbb}, {n})")
        lines += _cse_body([integrand], _Printer(), _WEIGHTED_SUM, target="total = total + ")
    return lines + ["    return total"]


def _gh_function(name: str, call) -> list[str]:
    from hildlimits._engine.activations import X
    from hildlimits._engine.gaussian import (
        ELL,
        MU,
        covariance_symbols,
        kink_plan,
        smoothed_kink,
        upper,
    )

    funcs, n = call.args[0], int(call.args[1])
    r = len(funcs)
    syms = upper(covariance_symbols(r))
    args = ", ".join(x.name for x in syms)
    text = " ".join(f"({sp.sstr(f)})(z_{a})" for a, f in enumerate(funcs))
    plan = kink_plan(funcs, X)
    if not plan.active:
        body = sp.Mul(*[f.xreplace({X: sp.Symbol(f"z[{a}]")}) for a, f in enumerate(funcs)])
        lines = [
            f"def {name}({args}):",
            f'    """E[{text}] by Gauss-Hermite quadrature, {n}^{r} nodes."""',
            f"    z, weights = gauss_hermite_fields(({args},), {r}, {n})",
        ]
        return lines + _cse_body([body], _Printer(), _WEIGHTED_SUM)
    lines = [
        f"def {name}({args}):",
        f'    """E[{text}] by Gauss-Hermite quadrature, {n} nodes per dimension; kinks: '
        f'{plan.describe()}."""',
    ]
    variants = plan.variants()
    for v, (split, last) in enumerate(variants):
        factors = [
            smoothed_kink(f, X) if a == last else f.xreplace({X: sp.Symbol(f"z[{a}]")})
            for a, f in enumerate(funcs)
        ]
        lines.append(
            f"    z, weights, ({MU.name}, {ELL.name}) = kinked_gauss_fields(({args},), {r}, {n}, "
            f"{tuple(split)}, {last})"
        )
        lines += _cse_body([sp.Mul(*factors)], _Printer(), _WEIGHTED_SUM, target=f"value{v} = ")
        if len(variants) > 1:  # spread of the closed-form field given the others, relative
            lines.append(f"    spread{v} = {ELL.name}[..., 0] / jnp.sqrt(C_{last}{last})")
    if len(variants) == 1:
        return lines + ["    return value0"]
    values = ", ".join(f"value{v}" for v in range(len(variants)))
    spreads = ", ".join(f"spread{v}" for v in range(len(variants)))
    return lines + [f"    return least_determined(({values}), ({spreads}))"]


def _mixture_function(name: str, call, printer: _Printer) -> list[str]:
    """Source of a scale-mixture expectation; a Price line integral inside it is defined among
    ``printer``'s functions."""
    from hildlimits._engine.activations import X
    from hildlimits._engine.gaussian import covariance_symbols, mixture_expression, upper

    funcs, n = call.args[0], int(call.args[1])
    syms = upper(covariance_symbols(len(funcs)))
    args = ", ".join(x.name for x in syms)
    expr, betas, _ = mixture_expression(tuple(funcs), X, int(call.args[2]))
    text = " ".join(f"({sp.sstr(f)})(z_{a})" for a, f in enumerate(funcs))
    lines = [
        f"def {name}({args}):",
        f'    """E[{text}] with tanh = E_K[erf(x/(sqrt(2) K))], K Kolmogorov: closed form at '
        f'{n}^{len(betas)} mixture nodes."""',
        f"    ({', '.join(b.name for b in betas)},), weights = scale_mixture_nodes({len(betas)}, {n})",
        f"    {args}, = trailing(({args},))",
    ]
    return lines + _cse_body([expr], _Printer(printer.primitives), _WEIGHTED_SUM)


def _shared_calls(entry) -> list[tuple[str, object, tuple[int, ...], tuple[tuple[int, ...], ...]]]:
    """Price-integral calls of an expectation function that a grid can evaluate once per
    distinct set of fields: ``(holder, call, slots, groups)``, with ``slots`` the function's slots
    that are the call's four fields and ``groups`` the call's interchangeable fields (same factor).

    A call qualifies when its covariance arguments are the function's own covariance entries of
    four distinct slots (no conditioning or tilting in between)."""
    from hildlimits._engine.gaussian import PriceIntegral

    index = {sym: (int(sym.name[2]), int(sym.name[3])) for sym in entry.cov_symbols}
    out = []
    for n, call in enumerate(_numerical_calls([entry.expr])):
        if not isinstance(call, PriceIntegral) or not all(a in index for a in call.args[3:]):
            continue
        cells = [index[a] for a in call.args[3:]]
        slots = tuple(cells[p][0] for p in (0, 4, 7, 9))  # C_00, C_11, C_22, C_33 of the call
        want = [tuple(sorted((slots[p], slots[q]))) for p in range(4) for q in range(p, 4)]
        if len(set(slots)) != 4 or cells != want:
            continue
        factors = list(zip(call.args[0], call.args[1], strict=True))
        groups = tuple(
            tuple(p for p in range(4) if factors[p] == f) for f in dict.fromkeys(factors)
        )
        out.append((f"q{n}", call, slots, groups))
    return out


def function_source(
    name: str, args, expr: sp.Expr, doc: str, printer: _Printer, result: str = "{0}"
) -> list[str]:
    """Source lines of ``def name(args): return expr`` printed by ``printer`` (numerical
    expectations become calls of functions collected in ``printer.primitives``; SymPy CSE);
    ``result`` formats the returned expression (e.g. :data:`_WEIGHTED_SUM` for a quadrature over
    a trailing node axis set up by lines the caller inserts after the docstring)."""
    lines = [f"def {name}({', '.join(args)}):", f'    """{doc}"""']
    return lines + _cse_body([expr], printer, result)


def _expectation_function(entry, printer: _Printer, shared: list) -> list[str]:
    """Source of an expectation function; the values of the ``shared`` calls (see
    :func:`_shared_calls`) may be passed in by the caller."""
    holders = sorted(h for h, *_ in shared)
    args = ", ".join([s.name for s in entry.cov_symbols] + [f"{h}=None" for h in holders])
    lines = [f"def {entry.name}({args}):", f'    """{entry.display()}: {entry.method}."""']
    return lines + _cse_body([entry.expr], printer, "{0}", frozenset(holders))


def _term_lines(term, free, out: str, system_exps, printer: _Printer, shared) -> list[str]:
    free_spec = tuple((str(s), kd) for s, kd in free)
    dummies = tuple((str(s), kd) for s, kd in term.dummies)
    pairs = tuple((str(a), str(b)) for a, b in term.symmetric_pairs)
    lines = [f"    G = Grid(K, M, {free_spec!r}, {dummies!r}, {pairs!r})"]
    # coefficient: indexed parameters become grid gathers
    coeff = term.coeff
    subs = {}
    for ix in sorted(coeff.atoms(sp.Indexed), key=str):
        local = f"{_PARAM_NAMES[ix.base]}_{''.join(str(a) for a in ix.indices)}"
        sym = sp.Symbol(local)
        subs[ix] = sym
        args = ", ".join(repr(str(a)) for a in ix.indices)
        lines.append(f"    {local} = G.param({_PARAM_NAMES[ix.base]}, {args})")
    for d in sorted(coeff.atoms(sp.KroneckerDelta), key=str):
        local = f"delta_{d.args[0]}{d.args[1]}"
        subs[d] = sp.Symbol(local)
        lines.append(f"    {local} = G.delta({str(d.args[0])!r}, {str(d.args[1])!r})")
    value = _print(coeff.xreplace(subs).xreplace({s: sp.Symbol(n) for s, n in _SCALARS.items()}))
    if term.expectation is not None and term.coincident:
        # kinked expectation: one merged-slot variant per coincidence pattern of the units
        variants = [(tuple(range(len(term.labels))), term.expectation)] + list(term.coincident)
        items = []
        for partition, name in variants:
            kw = [
                f"{sym.name}=cov({int(sym.name[2])}, {int(sym.name[3])})"
                for sym in system_exps[name].cov_symbols
            ]
            for holder, call, slots, groups in shared[name]:
                fn = printer.primitive_name(call)
                kw.append(f"{holder}=unique({fn}, {slots!r}, {groups!r})")
            items.append(f"{partition!r}: lambda cov, unique: {name}({', '.join(kw)})")
        labels = tuple(str(x) for x in term.labels)
        lines.append(f"    E = G.by_pattern(omega, {labels!r}, {{{', '.join(items)}}})")
        value = f"({value}) * E"
    elif term.expectation is not None:
        entry = system_exps[term.expectation]
        kw = []
        for sym in entry.cov_symbols:
            a, b = int(sym.name[2]), int(sym.name[3])
            kw.append(f"{sym.name}=G.cov(omega, {str(term.labels[a])!r}, {str(term.labels[b])!r})")
        value = f"({value}) * {entry.name}({', '.join(kw)})"
    lines.append(f"    {out} = {out} + G.reduce({value})")
    return lines


def _equation_lines(eq, system_exps, out: str, shape: str, printer: _Printer, shared) -> list[str]:
    lines = [
        f"    # d{eq.name}/dt" if out.startswith("d") else f"    # {eq.name}",
        f"    {out} = jnp.zeros({shape}, omega.dtype)",
    ]
    for term in eq.terms:
        lines += _term_lines(term, eq.free, out, system_exps, printer, shared)
    return lines


def header(system) -> dict:
    from hildlimits._pipeline.cache import cache_key

    return {
        "inputs": system.structure,
        "hildlimits": __version__,
        "sympy": sp.__version__,
        "key": cache_key(system.structure),
    }


def generate_source(system) -> str:
    """Python/JAX source of ``system`` (a module; see the module docstring)."""
    exps = {e.name: e for e in system.expectations}
    trained = system.structure["train_second_layer"]
    info = header(system)
    lines = [
        '"""Generated by hildlimits -- do not edit.',
        "",
        f"inputs: {json.dumps(info['inputs'], sort_keys=True)}",
        f"hildlimits {info['hildlimits']}, sympy {info['sympy']}, derivation key {info['key']}",
        "",
        "y: state {" + ", ".join(f"'{n}'" for n in system.state_variables) + "};",
        "args: {'T', 'v_teacher', 'eta', 'eta_v', 'sigma', 'kappa'"
        + ("" if trained else ", 'v'")
        + "}.",
        '"""',
        "",
        *_IMPORTS,
        *(
            ["from hildlimits._engine.joint import field_covariances, spectral_rates"]
            if system.structure.get("covariance") == "spectrum"
            else []
        ),
        "",
        "STATE = " + repr(system.state_variables),
        "",
    ]
    printer = _Printer()
    shared = {e.name: _shared_calls(e) for e in system.expectations}
    functions = []
    for entry in system.expectations:
        functions += _expectation_function(entry, printer, shared[entry.name]) + ["", ""]
    for _name, definition in printer.primitives.values():
        lines += definition + ["", ""]
    lines += functions

    def unpack() -> list[str]:
        out = [
            '    Q, R = y["Q"], y["R"]',
            '    v = y["v"]' if trained else '    v = args["v"]',
            '    T, v_teacher = args["T"], args["v_teacher"]',
            '    eta, eta_v, sigma, kappa = args["eta"], args["eta_v"], args["sigma"], args["kappa"]',
            *(['    batch = args["batch"]'] if system.structure.get("minibatch") else []),
            "    K, M = Q.shape[0], T.shape[0]",
            "    omega = overlap_matrix(Q, R, T)",
        ]
        return out

    shapes = {
        "Q": "(K, K)",
        "R": "(K, M)",
        "v": "(K,)",
        "F": "(K, K)",
        "H": "(K, M)",
        "D": "(K, K)",
    }
    spectral = system.structure.get("covariance") == "spectrum"
    if spectral:
        # the moments at the field covariances, then the per-bin assembly (docs/spectra.md)
        lines += [
            "def moments(y, args):",
            '    """F_ik = E[delta_i lambda_k], H_in = E[delta_i nu_n], D_ik = E[delta_i delta_k]'
            ' (and the rate of v) at field covariances y["Q"], y["R"], args["T"]."""',
        ]
        lines += unpack()
        for eq in system.equations:
            lines += _equation_lines(eq, exps, "d" + eq.name, shapes[eq.name], printer, shared)
        lines += [
            "    return {" + ", ".join(f'"{eq.name}": d{eq.name}' for eq in system.equations) + "}",
            "",
            "",
            "def _fields(y, args):",
            '    Q, R, T = field_covariances(y["Q"], y["R"], args["T"], args["s"])',
            '    fy = {"Q": Q, "R": R}',
            '    if "v" in y:',
            '        fy["v"] = y["v"]',
            '    return fy, {**args, "T": T}',
            "",
            "",
            "def vector_field(t, y, args):",
            '    """Right-hand side d(state)/dt (per-bin overlaps)."""',
            "    fy, fa = _fields(y, args)",
            "    m = moments(fy, fa)",
            "    dQ, dR = spectral_rates(",
            '        m, y["Q"], y["R"], args["T"], args["s"], args["p"], args["eta"], args["kappa"],',
            '        fields=(fy["Q"], fy["R"], fa["T"]),'
            + (' batch=args["batch"],' if system.structure.get("minibatch") else ""),
            "    )",
            '    return {"Q": dQ, "R": dR' + (', "v": m["v"]}' if trained else "}"),
            "",
            "",
        ]
        if system.structure.get("adagrad"):
            lines += [
                "def grad_sq(y, args):",
                '    """sum_i E[(dl/dlambda_i)^2] (AdaGrad-Norm\'s accumulator, before |x|^2/N)."""',
                "    fy, fa = _fields(y, args)",
                '    return jnp.trace(moments(fy, fa)["D"])',
                "",
                "",
            ]
        for obs in system.observables:
            lines += [
                f"def {obs.name}(y, args):",
                f'    """Observable {obs.name} (of the field covariances)."""',
                f"    return _{obs.name}_fields(*_fields(y, args))",
                "",
                "",
                f"def _{obs.name}_fields(y, args):",
            ]
            lines += unpack()
            lines += _equation_lines(obs, exps, obs.name, "()", printer, shared)
            lines += [f"    return {obs.name}", "", ""]
        return "\n".join(lines).rstrip() + "\n"
    lines += ["def vector_field(t, y, args):", '    """Right-hand side d(state)/dt."""']
    lines += unpack()
    for eq in system.equations:
        lines += _equation_lines(eq, exps, "d" + eq.name, shapes[eq.name], printer, shared)
    lines += [
        "    return {" + ", ".join(f'"{eq.name}": d{eq.name}' for eq in system.equations) + "}",
        "",
        "",
    ]
    for obs in system.observables:
        lines += [f"def {obs.name}(y, args):", f'    """Observable {obs.name}."""'] + unpack()
        lines += _equation_lines(obs, exps, obs.name, "()", printer, shared)
        lines += [f"    return {obs.name}", "", ""]
    return "\n".join(lines).rstrip() + "\n"


def load_module(
    system=None, *, source: str | None = None, key: str | None = None, kind: str = "generated"
) -> types.ModuleType:
    """Compile generated source into a module (source registered for tracebacks): that of
    :attr:`ODESystem.source` (``system``), or ``source`` under the name ``key`` (``kind`` tags the
    file name, e.g. ``"meanfield"``; ``key`` defaults to a hash of the source)."""
    if system is not None:
        source, key = system.source, header(system)["key"]
    if source is None:
        raise TypeError("load_module needs a system or a source")
    if key is None:
        key = hashlib.sha256(source.encode()).hexdigest()
    filename = f"<hildlimits-{kind}-{key[:12]}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    module = types.ModuleType(f"hildlimits_{kind}_{key[:12]}")
    module.__file__ = filename
    exec(compile(source, filename, "exec"), module.__dict__)
    return module


def expectation_function(expectation):
    """JAX function ``f(C)`` of a covariance matrix (``(..., n, n)`` array) evaluating an
    :class:`~hildlimits._engine.gaussian.Expectation` (closed form, Price line integral or
    Gauss--Hermite quadrature) with the same printer as the generated vector fields.

    Example:
        >>> import sympy as sp, numpy as np
        >>> from hildlimits import gaussian_expectation
        >>> x = sp.Symbol("x", real=True)
        >>> f = expectation_function(gaussian_expectation([sp.Max(0, x), x], x))
        >>> round(float(f(np.array([[1.0, 0.5], [0.5, 1.0]]))), 6)
        0.25
    """
    import jax.numpy as jnp

    from hildlimits._engine.gaussian import upper

    printer = _Printer()
    cov = expectation.cov
    syms = [c for c in upper(cov)]
    names = [f"C_{a}{b}" for a in range(cov.shape[0]) for b in range(a, cov.shape[0])]
    expr = expectation.expr.xreplace({s: sp.Symbol(n) for s, n in zip(syms, names, strict=True)})
    lines = [f"def f({', '.join(names)}):"] + _cse_body([expr], printer, "{0}")
    head = []
    for _, definition in printer.primitives.values():
        head += definition + [""]
    source = "\n".join([*_IMPORTS, ""] + head + lines)
    namespace: dict = {}
    exec(compile(source, "<hildlimits-expectation>", "exec"), namespace)
    n = cov.shape[0]

    def evaluate(C):
        C = jnp.asarray(C)
        args = [C[..., a, b] for a in range(n) for b in range(a, n)]
        return namespace["f"](*args) + jnp.zeros(C.shape[:-2])

    return evaluate
