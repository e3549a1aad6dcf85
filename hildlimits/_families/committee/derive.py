r"""Derivation of the order-parameter ODEs of online SGD (the ``N -> infinity`` limit).

The steps, all done by SymPy on index templates (``K`` and ``M`` stay symbolic):

1. the loss ``l = (\hat y - y)^2 / 2`` is written with sums over units and differentiated with
   respect to the local fields ``\lambda_i`` and second-layer weights ``v_i``;
2. the SGD step ``w_i' = w_i - \eta h (\partial l/\partial\lambda_i) x - \eta\kappa h^2 w_i``
   (``h = 1/\sqrt N``) is inserted into ``Q_ik = w_i.w_k/N`` and ``R_in = w_i.w^*_n/N``; the
   ``O(h^2)`` part of the increment is the rate per unit time ``t = steps/N``;
3. products of sums are expanded into templates ``coeff * E[f_1(z_1) ... f_r(z_r)]`` summed over
   dummy indices; each expectation goes to the Gaussian-expectation engine (:mod:`._gaussian`).
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass, field

from hildlimits._engine import activations as A  # its symbol ``X`` imports SymPy on first use
from hildlimits._engine.activations import get_activation
from hildlimits._families.committee.model import Committee


class _LazyModule:
    """A module imported on first attribute access, which then takes this placeholder's place
    among this module's globals. SymPy and the engine built on it cost ~1 s to import; a cached
    derivation (:func:`derive` reading :mod:`hildlimits._pipeline.cache`) never needs them."""

    def __init__(self, alias: str, name: str):
        self._alias, self._name = alias, name

    def __getattr__(self, attr: str):
        module = importlib.import_module(self._name)
        globals()[self._alias] = module
        return getattr(module, attr)


sp = _LazyModule("sp", "sympy")
S = _LazyModule("S", "hildlimits._engine.symbolic")
G = _LazyModule("G", "hildlimits._engine.gaussian")  # the Gaussian-expectation engine

DEFAULT_GH_NODES = {1: 96, 2: 48, 3: 32, 4: 20}
"""Gauss--Hermite nodes per dimension, by number of fields, for expectations without a closed
form (tensor grids, pruned where a node weight is below 1e-13)."""

# ----------------------------------------------------------------------------- data model


@dataclass(frozen=True)
class ExpectationEntry:
    r"""One Gaussian expectation ``E[f_0(z_0) ... f_{r-1}(z_{r-1})]`` with ``z ~ N(0, C)``."""

    name: str
    funcs: tuple[sp.Expr, ...]  # f_s as expressions in X
    labels: tuple[str, ...]  # display name of each f_s ("g'", "g", "g_*", "id", ...)
    expr: sp.Expr  # closed form in the symbols C_ab
    method: str

    @property
    def cov_symbols(self) -> tuple[sp.Symbol, ...]:
        syms = (s for s in self.expr.free_symbols if s.name.startswith("C_"))
        return tuple(sorted(syms, key=lambda s: s.name))

    def display(self, *, latex: bool = False) -> str:
        parts = [_fmt_func(lbl, f"z_{s}", latex) for s, lbl in enumerate(self.labels)]
        return (
            (r"\mathbb{E}\left[" + r"\,".join(parts) + r"\right]")
            if latex
            else "E[" + " ".join(parts) + "]"
        )


@dataclass(frozen=True)
class Term:
    """``coeff * E[...]`` (or ``coeff`` alone) summed over ``dummies``."""

    coeff: sp.Expr
    dummies: tuple[tuple[sp.Symbol, str], ...]
    expectation: str | None
    labels: tuple[sp.Symbol, ...]  # the unit index of each slot of the expectation
    kinds: tuple[str, ...]  # "S" (student field lambda) or "T" (teacher field nu) per slot
    func_labels: tuple[str, ...] = ()  # "g", "g'", "g_*", "id" per slot (for display)
    symmetric_pairs: tuple[tuple[sp.Symbol, sp.Symbol], ...] = ()
    # For expectations with kinks (sign/step factors), whose closed forms are singular where
    # slots of the same kind share a unit: (partition of the slots, expectation of the merged
    # slots) for every coincidence pattern; the generated code picks one per grid point.
    coincident: tuple[tuple[tuple[int, ...], str], ...] = ()


@dataclass(frozen=True)
class Equation:
    """Right-hand side (or observable) ``name_{free}`` as a sum of :class:`Term`."""

    name: str
    free: tuple[tuple[sp.Symbol, str], ...]
    terms: tuple[Term, ...]
    symmetric: bool = False


@dataclass(frozen=True, eq=False)
class ODESystem:
    r"""The derived ODE system of a model family (valid for every ``K``, ``M``).

    Attributes:
        structure: the derivation inputs (activations, which layers train).
        equations: right-hand sides ``dQ/dt``, ``dR/dt`` (and ``dv/dt``).
        observables: ``risk`` and any other derived observable.
        expectations: the Gaussian expectations the equations use, with closed forms.
    """

    structure: dict
    equations: tuple[Equation, ...]
    observables: tuple[Equation, ...]
    expectations: tuple[ExpectationEntry, ...]
    _jax: dict = field(default_factory=dict, repr=False, compare=False)

    # --- loading --------------------------------------------------------------
    @classmethod
    def _cached(
        cls, *, structure: dict, load, state_variables, observable_names, source: str
    ) -> ODESystem:
        """A system read from the derivation cache: ``equations``, ``observables`` and
        ``expectations`` come from ``load()`` on first access (parsing them imports SymPy);
        ``structure``, the names, :attr:`source` and :attr:`module` do not need them."""
        system = object.__new__(cls)
        for name, value in (
            ("structure", structure),
            ("_jax", {"source": source}),
            ("_pending", load),
            ("_names", (tuple(state_variables), tuple(observable_names))),
        ):
            object.__setattr__(system, name, value)
        return system

    def __getattr__(self, name: str):
        # only reached for attributes not set yet: the parts of a cached system
        pending = self.__dict__.get("_pending")
        if pending is None or name not in ("equations", "observables", "expectations"):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        equations, observables, expectations = pending()
        object.__setattr__(self, "equations", tuple(equations))
        object.__setattr__(self, "observables", tuple(observables))
        object.__setattr__(self, "expectations", tuple(expectations))
        del self.__dict__["_pending"]
        return self.__dict__[name]

    # --- description -------------------------------------------------------
    @property
    def spectral(self) -> bool:
        """Inputs ``x ~ N(0, Sigma)`` given by a spectrum: the equations are the moments ``F``,
        ``H``, ``D`` that drive the per-bin overlaps (``docs/spectra.md``)."""
        return self.structure.get("covariance") == "spectrum"

    @property
    def state_variables(self) -> tuple[str, ...]:
        if self.spectral:
            return ("Q", "R", "v") if self.structure["train_second_layer"] else ("Q", "R")
        names = self.__dict__.get("_names")
        if names is not None:
            return names[0]
        return tuple(eq.name for eq in self.equations)

    @property
    def parameters(self) -> tuple[str, ...]:
        p = ["eta", "sigma", "kappa", "T", "v_teacher"]
        if self.structure["train_second_layer"]:
            p.insert(1, "eta_v")
        else:
            p.append("v")
        if self.spectral:
            p += ["s", "p"]
        if self.structure.get("minibatch"):
            p.append("batch")
        return tuple(p)

    @property
    def observable_names(self) -> tuple[str, ...]:
        names = self.__dict__.get("_names")
        if names is not None:
            return names[1]
        return tuple(o.name for o in self.observables)

    def expectation(self, name: str) -> ExpectationEntry:
        return next(e for e in self.expectations if e.name == name)

    def __str__(self) -> str:
        return format_system(self, latex=False)

    def latex(self) -> str:
        """The system as a LaTeX ``align`` block."""
        return format_system(self, latex=True)

    def markdown(self) -> str:
        """The system as Markdown with LaTeX maths (used by ``derivations/``)."""
        return format_markdown(self)

    # --- code -----------------------------------------------------------------
    @property
    def source(self) -> str:
        """Generated JAX source of the vector field and observables."""
        if "source" not in self._jax:
            from hildlimits._engine.codegen import generate_source

            self._jax["source"] = generate_source(self)
        return self._jax["source"]

    @property
    def module(self):
        """The generated module (``vector_field(t, y, args)``, ``risk(y, args)``)."""
        if "module" not in self._jax:
            import sys

            if "source" in self._jax and "hildlimits._engine.codegen" not in sys.modules:
                # cached source: compiled as ``_codegen.load_module`` does, without importing
                # the code generator (and SymPy)
                from hildlimits._pipeline.cache import cache_key

                self._jax["module"] = _load_source(self._jax["source"], cache_key(self.structure))
            else:
                from hildlimits._engine.codegen import load_module

                self._jax["module"] = load_module(self)
        return self._jax["module"]

    def write_source(self, path) -> None:
        """Write :attr:`source` to ``path`` (header names the derivation inputs)."""
        from pathlib import Path

        Path(path).write_text(self.source)


def _load_source(source: str, key: str):
    """:func:`hildlimits._engine.codegen.load_module` of generated ``source`` with derivation ``key``."""
    import linecache
    import types

    filename = f"<hildlimits-generated-{key[:12]}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    module = types.ModuleType(f"hildlimits_generated_{key[:12]}")
    module.__file__ = filename
    exec(compile(source, filename, "exec"), module.__dict__)
    return module


# ----------------------------------------------------------------------------- formatting


def _fmt_func(label: str, arg: str, latex: bool) -> str:
    if label == "id":
        return arg
    if latex:
        name = {"g": "g", "g_*": "g_*"}.get(label.rstrip("'"), label.rstrip("'"))
        return f"{name}{label[len(label.rstrip(chr(39))) :]}({arg})"
    return f"{label}({arg})"


def _term_text(term: Term, exp: ExpectationEntry | None, latex: bool) -> str:
    coeff = sp.latex(term.coeff) if latex else sp.sstr(term.coeff)
    if exp is None:
        body = coeff
    else:
        field_text = {S.STUDENT: ("λ", r"\lambda"), S.TEACHER: ("ν", r"\nu")}
        args = []
        for lbl, idx, kind in zip(term.func_labels, term.labels, term.kinds, strict=True):
            fld = field_text[kind][1 if latex else 0]
            args.append(_fmt_func(lbl, f"{fld}_{{{idx}}}" if latex else f"{fld}_{idx}", latex))
        ex = (
            (r"\mathbb{E}\left[" + r"\,".join(args) + r"\right]")
            if latex
            else "E[" + " ".join(args) + "]"
        )
        body = f"\\left({coeff}\\right) {ex}" if latex else f"({coeff})*{ex}"
    if term.dummies:
        names = ",".join(str(d) for d, _ in term.dummies)
        body = (r"\sum_{" + names + "} " + body) if latex else f"Σ_{{{names}}} " + body
    return body


def _join(parts: list[str], plus: str, minus: str) -> str:
    """Join term texts with ``plus``, or ``minus`` before a term that starts with a sign."""
    out = parts[0] if parts else "0"
    for p in parts[1:]:
        out += (minus + p[1:].lstrip()) if p.startswith("-") else (plus + p)
    return out


def _lhs(eq: Equation, latex: bool, observable: bool) -> str:
    idx = "".join(str(s) for s, _ in eq.free)
    if observable:
        return r"\varepsilon" if (latex and eq.name == "risk") else eq.name
    if latex:
        return rf"\frac{{d {eq.name}_{{{idx}}}}}{{dt}}"
    return f"d{eq.name}_{idx}/dt"


def format_system(system: ODESystem, *, latex: bool) -> str:
    st = system.structure
    exps = {e.name: e for e in system.expectations}
    lines = []
    if not latex:
        lines += [
            f"Online SGD ODEs (N -> inf, t = steps/N) for a two-layer committee: K student "
            f"'{st['activation']}' units, M teacher '{st['teacher_activation']}' units, second layer "
            f"{'trained' if st['train_second_layer'] else 'fixed'}.",
            f"state: {', '.join(system.state_variables)}   parameters: {', '.join(system.parameters)}"
            f"   observables: {', '.join(system.observable_names)}",
            "g = "
            + sp.sstr(get_activation(st["activation"]).expr)
            + ",  g_* = "
            + sp.sstr(get_activation(st["teacher_activation"]).expr),
            "",
        ]
    rows = []
    for eq, obs in [(e, False) for e in system.equations] + [(o, True) for o in system.observables]:
        rhs = [_term_text(t, exps.get(t.expectation), latex) for t in eq.terms]
        if latex:
            rows.append(
                _lhs(eq, True, obs) + " &= " + _join(rhs, r" \\ &\quad + ", r" \\ &\quad - ")
            )
        else:
            rows.append(_lhs(eq, False, obs) + " =\n    " + _join(rhs, "\n  + ", "\n  - "))
    if latex:
        lines.append(r"\begin{align}")
        lines.append(" \\\\\n".join(rows))
        lines.append(r"\end{align}")
        lines.append(r"\begin{align}")
        ex_rows = [
            e.display(latex=True) + " &= " + sp.latex(e.expr) + rf" && \text{{{e.method}}}"
            for e in system.expectations
        ]
        lines.append(" \\\\\n".join(ex_rows))
        lines.append(r"\end{align}")
    else:
        lines += rows
        lines += [
            "",
            "Gaussian expectations, z ~ N(0, C) with C_ab the overlaps of the fields in the slots:",
        ]
        for e in system.expectations:
            lines.append(f"  {e.name} = {e.display()}   [{e.method}]")
            lines.append(f"      = {sp.sstr(e.expr)}")
    return "\n".join(lines)


def format_markdown(system: ODESystem) -> str:
    st = system.structure
    exps = {e.name: e for e in system.expectations}
    out = [
        f"# Online SGD ODEs: {st['activation']} student, {st['teacher_activation']} teacher, "
        f"second layer {'trained' if st['train_second_layer'] else 'fixed'}",
        "",
        "Generated by `hildlimits` from the model description; do not edit by hand.",
        "",
        f"- state variables: {', '.join(system.state_variables)}",
        f"- parameters: {', '.join(system.parameters)}",
        f"- observables: {', '.join(system.observable_names)}",
        f"- activations: $g(x) = {sp.latex(get_activation(st['activation']).expr)}$, "
        f"$g_*(x) = {sp.latex(get_activation(st['teacher_activation']).expr)}$",
        "",
        "## Equations",
        "",
    ]
    for eq, obs in [(e, False) for e in system.equations] + [(o, True) for o in system.observables]:
        rhs = [_term_text(t, exps.get(t.expectation), True) for t in eq.terms]
        out.append("$$")
        out.append(r"\begin{aligned}")
        out.append(
            _lhs(eq, True, obs) + " &= " + _join(rhs, " \\\\\n&\\quad + ", " \\\\\n&\\quad - ")
        )
        out.append(r"\end{aligned}")
        out.append("$$")
        out.append("")
    out += [
        "## Gaussian expectations",
        "",
        "$z \\sim \\mathcal N(0, C)$; each was derived by the engine by the rules named.",
        "",
    ]
    for e in system.expectations:
        out.append(f"- `{e.name}` ({e.method}):")
        out.append("")
        out.append("$$")
        out.append(e.display(latex=True) + " = " + sp.latex(e.expr))
        out.append("$$")
        out.append("")
    return "\n".join(out)


# ----------------------------------------------------------------------------- derivation


def _func_label(factor: sp.Expr, fld: sp.Indexed) -> str:
    if factor == fld:
        return "id"
    base = factor.expr if isinstance(factor, sp.Derivative) else factor
    order = len(factor.variables) if isinstance(factor, sp.Derivative) else 0
    name = "g" if base.func == S.g else "g_*" if base.func == S.gs else None
    if name is None:
        raise ValueError(f"unsupported field factor {factor}")
    return name + "'" * order


class _Builder:
    """Turns raw templates into :class:`Term` objects, sharing expectations between equations."""

    def __init__(
        self, student, teacher, quadrature_nodes=None, line_nodes=None, mixture_nodes=None
    ):
        X = A.X
        self.acts = {S.g: sp.Lambda(X, student.expr), S.gs: sp.Lambda(X, teacher.expr)}
        self.expectations: dict[tuple, ExpectationEntry] = {}
        self.quadrature_nodes = quadrature_nodes
        self.line_nodes = line_nodes or G.DEFAULT_LINE_NODES
        self.mixture_nodes = G.DEFAULT_MIXTURE_NODES if mixture_nodes is None else mixture_nodes

    def _slot(self, factor: sp.Expr):
        fld, kind = S.field_of(factor)
        label = _func_label(factor, fld)
        func = factor.xreplace({fld: A.X})
        for f, lam_ in self.acts.items():
            func = func.replace(f, lam_)
        return sp.simplify(func.doit()), label, fld.indices[0], kind

    def _entry(self, funcs: tuple, labels: tuple) -> ExpectationEntry:
        key = funcs
        if key not in self.expectations:
            e = G.gaussian_expectation(
                list(funcs),
                A.X,
                line_nodes=self.line_nodes,
                quadrature_nodes=self.quadrature_nodes or DEFAULT_GH_NODES[len(funcs)],
                mixture_nodes=self.mixture_nodes,
            )
            self.expectations[key] = ExpectationEntry(
                name=f"E{len(self.expectations)}",
                funcs=funcs,
                labels=labels,
                expr=e.expr,
                method=e.method,
            )
        return self.expectations[key]

    def _coincident(self, entry: ExpectationEntry, kinds: tuple) -> tuple:
        """Merged-slot expectations for every pattern of coinciding same-kind slots."""
        if not _needs_merging(entry):
            return ()
        out = []
        for partition in _partitions(kinds):
            groups = sorted(set(partition))
            if len(groups) == len(partition):
                continue
            funcs = tuple(
                sp.expand(sp.Mul(*[entry.funcs[s] for s in range(len(kinds)) if partition[s] == g]))
                for g in groups
            )
            labels = tuple(
                "·".join(entry.labels[s] for s in range(len(kinds)) if partition[s] == g)
                for g in groups
            )
            out.append((partition, self._entry(funcs, labels).name))
        return tuple(out)

    def terms(self, expr: sp.Expr, free, symmetric: bool) -> tuple[Term, ...]:
        merged: dict[tuple, list] = {}
        for raw in S.normal_terms(expr):
            coeff, slots = raw.coeff, []
            power = 0
            for f in raw.factors:
                for factor in _split_powers(f):
                    if factor == S.zeta:
                        power += 1
                    else:
                        slots.append(self._slot(factor))
            if power % 2:
                continue
            coeff = coeff * sp.factorial2(power - 1) if power else coeff
            best = None
            for mapping in S.dummy_renamings(raw.dummies):
                c = coeff.xreplace(mapping)
                ss = sorted(
                    (
                        (sp.srepr(fn), lbl, idx.xreplace(mapping), kind, fn)
                        for fn, lbl, idx, kind in slots
                    ),
                    key=lambda s: (s[0], s[3], s[2].name),
                )
                dums = tuple(
                    sorted(((mapping[d], kd) for d, kd in raw.dummies), key=lambda p: p[0].name)
                )
                key = (tuple((s[0], s[2].name, s[3]) for s in ss), tuple(str(d) for d, _ in dums))
                if best is None or (key, sp.srepr(c)) < (best[0], sp.srepr(best[1])):
                    best = (key, c, ss, dums)
            key, c, ss, dums = best
            if key not in merged:
                merged[key] = [sp.Integer(0), ss, dums]
            merged[key][0] += c
        out = []
        for coeff, ss, dums in merged.values():
            coeff = sp.factor_terms(sp.expand(coeff))
            if coeff == 0:
                continue
            if ss:
                entry = self._entry(tuple(s[4] for s in ss), tuple(s[1] for s in ss))
                name, labels, kinds = entry.name, tuple(s[2] for s in ss), tuple(s[3] for s in ss)
            else:
                entry, name, labels, kinds = None, None, (), ()
            flabels = tuple(s[1] for s in ss)
            term = Term(coeff, dums, name, labels, kinds, flabels)
            pairs = _symmetric_pairs(
                term, free, symmetric, {e.name: e for e in self.expectations.values()}
            )
            coincident = self._coincident(entry, kinds) if entry is not None else ()
            out.append(Term(coeff, dums, name, labels, kinds, flabels, pairs, coincident))
        out.sort(
            key=lambda t: (
                t.expectation is None,
                len(t.dummies),
                t.expectation or "",
                sp.srepr(t.coeff),
            )
        )
        return tuple(out)


def _needs_merging(entry: ExpectationEntry) -> bool:
    """Closed forms built from sign factors (also those at the nodes of a scale mixture) are
    singular where two same-kind slots coincide, and so is a Price line integral over sign
    factors (``H H tanh tanh``: ``sign sign erf erf`` at each mixture node) -- there the pair
    density and the conditional variances degenerate, and the result is rounding noise (seen
    as an adaptive solve that cannot reach ``rtol = 1e-12``)."""
    m = entry.method
    if "closed form" not in m:
        return False
    if "sign" in m or "delta" in m:
        return True
    return "Price line integral" in m and any(f.has(*G.KINKS) for f in entry.funcs)


def _partitions(kinds: tuple[str, ...]) -> list[tuple[int, ...]]:
    """Set partitions of the slots that only join slots of the same kind, as group labels
    (canonical: the group of a slot is the smallest slot in it)."""
    slots = list(range(len(kinds)))
    out: list[tuple[int, ...]] = []

    def rec(pos: int, assign: list[int]) -> None:
        if pos == len(slots):
            out.append(tuple(assign))
            return
        options = {a for a in assign if kinds[a] == kinds[pos]} | {pos}
        for g in sorted(options):
            rec(pos + 1, assign + [g])

    rec(0, [])
    return out


def _split_powers(f: sp.Expr):
    for factor in sp.Mul.make_args(f):
        if isinstance(factor, sp.Pow) and factor.exp.is_Integer and factor.exp > 0:
            yield from [factor.base] * int(factor.exp)
        else:
            yield factor


def _symmetric_pairs(term: Term, free, symmetric: bool, exps) -> tuple:
    """Pairs of indices (both summed, or both free in a symmetric output) that the term is
    invariant under exchanging; the code generator evaluates such a pair on ``a <= b`` only."""
    candidates = []
    dummy = list(term.dummies)
    for group in (dummy, list(free) if symmetric else []):
        for a in range(len(group)):
            for b in range(a + 1, len(group)):
                if group[a][1] == group[b][1]:
                    candidates.append((group[a][0], group[b][0]))
    used, pairs = set(), []
    funcs = exps[term.expectation].funcs if term.expectation else ()
    orig = sorted(zip((sp.srepr(f) for f in funcs), (x.name for x in term.labels), strict=True))
    for a, b in candidates:
        if a in used or b in used:
            continue
        swap = {a: b, b: a}
        if sp.expand(term.coeff.xreplace(swap) - term.coeff) != 0:
            continue
        swapped = sorted(
            zip(
                (sp.srepr(f) for f in funcs),
                (x.xreplace(swap).name for x in term.labels),
                strict=True,
            )
        )
        if swapped == orig:
            pairs.append((a, b))
            used |= {a, b}
    return tuple(pairs)


@functools.lru_cache(maxsize=64)
def _derive_committee(
    activation: str,
    teacher_activation: str,
    train_second_layer: bool,
    quadrature_nodes: int | None = None,
    line_nodes: int | None = None,
    mixture_nodes: int | None = None,
    extra: tuple = (),
) -> ODESystem:
    """The template derivation; ``extra``: the structure's loss and covariance items
    (:attr:`Committee.loss_structure`, ``covariance``) as a sorted tuple."""
    student = get_activation(activation, student=True)
    teacher = get_activation(teacher_activation, field="teacher_activation")
    j, m = sp.Symbol("j", integer=True), sp.Symbol("m", integer=True)
    i, k, n = S.i, S.k, S.n
    options = dict(extra)
    spectral = options.get("covariance") == "spectrum"
    # |x|^2/N of the step's input direction: 1/B for the mean of a mini-batch (S.inner)
    xx = 1 / S.batch if options.get("minibatch") else sp.Integer(1)

    yhat = sp.Sum(S.v[j] * S.g(S.lam[j]), (j, 1, S.K))
    fstar = sp.Sum(S.vs[m] * S.gs(S.nu[m]), (m, 1, S.M))
    if "loss" in options:
        from hildlimits._families.committee import loss as L

        ell = L.loss_expression(options["loss"], options.get("huber_delta", 1.0))
        loss = sp.expand(ell.xreplace({L.YHAT: yhat, L.Y: fstar + S.sigma * S.zeta}))
    else:
        loss = (yhat - fstar - S.sigma * S.zeta) ** 2 / 2
    b = _Builder(student, teacher, quadrature_nodes, line_nodes, mixture_nodes)
    fS, fT = (i, S.STUDENT), (n, S.TEACHER)
    structure = {
        "family": "committee",
        "activation": activation,
        "teacher_activation": teacher_activation,
        "train_second_layer": train_second_layer,
        "quadrature_nodes": quadrature_nodes,
        "line_nodes": line_nodes,
        "mixture_nodes": mixture_nodes,
        **options,
    }
    risk = (yhat - fstar) ** 2 / 2
    observables = [Equation("risk", (), b.terms(risk, (), False))]
    if "loss" in options:
        observables.append(Equation("loss", (), b.terms(loss, (), False)))
    if options.get("adagrad") and not spectral:  # (spectral: the trace of D, codegen)
        # AdaGrad-Norm's accumulator: |g|^2 of one sample's first-layer gradient
        # g_i = h dl/dlambda_i x is sum_i (dl/dlambda_i)^2 |x|^2/N (the |x|^2/N factor, the mean
        # eigenvalue with a spectrum, and 1/B are applied by the optimiser wrapper, optim.py)
        a = sp.Symbol("a", integer=True)
        dl_a = sp.diff(loss, S.lam[a])
        observables.append(
            Equation("grad_sq", (), b.terms(sp.Sum(sp.expand(dl_a**2), (a, 1, S.K)), (), False))
        )
    if spectral:
        # the moments of the drift at the field covariances (docs/spectra.md)
        dl_i, dl_k = sp.diff(loss, S.lam[i]), sp.diff(loss, S.lam[k])
        fK = (k, S.STUDENT)
        equations = [
            Equation("F", (fS, fK), b.terms(dl_i * S.lam[k], (fS, fK), False)),
            Equation("H", (fS, fT), b.terms(dl_i * S.nu[n], (fS, fT), False)),
            Equation("D", (fS, fK), b.terms(dl_i * dl_k, (fS, fK), True), symmetric=True),
        ]
        if train_second_layer:
            rate_v = S.rate(-S.eta_v * S.h**2 * sp.diff(loss, S.v[i]))
            equations.append(Equation("v", (fS,), b.terms(rate_v, (fS,), False)))
        return ODESystem(
            structure=structure,
            equations=tuple(equations),
            observables=tuple(observables),
            expectations=tuple(b.expectations.values()),
        )

    def w_new(a):
        dl = sp.diff(loss, S.lam[a])
        return (
            S.Vec.w(a) + (-S.eta * S.h * dl) * S.Vec.x() + (-S.eta * S.kappa * S.h**2) * S.Vec.w(a)
        )

    rate_Q = S.rate(S.inner(w_new(i), w_new(k), xx=xx) - S.Q[i, k])
    rate_R = S.rate(S.inner(w_new(i), S.Vec.ws(n)) - S.R[i, n])
    equations = [
        Equation(
            "Q", (fS, (k, S.STUDENT)), b.terms(rate_Q, (fS, (k, S.STUDENT)), True), symmetric=True
        ),
        Equation("R", (fS, fT), b.terms(rate_R, (fS, fT), False)),
    ]
    if train_second_layer:
        rate_v = S.rate(-S.eta_v * S.h**2 * sp.diff(loss, S.v[i]))
        equations.append(Equation("v", (fS,), b.terms(rate_v, (fS,), False)))
    return ODESystem(
        structure=structure,
        equations=tuple(equations),
        observables=tuple(observables),
        expectations=tuple(b.expectations.values()),
    )


def derive(model: Committee, *, cache: bool = True) -> ODESystem:
    r"""Derive the ``N -> infinity`` ODEs of online SGD for ``model``.

    The result depends only on ``model.structure`` (activations, trained layers): ``K`` and ``M``
    stay symbolic, and learning rates, noise and weight decay are symbols (parameters).

    Args:
        model: a :class:`Committee`.
        cache: use the on-disk and in-memory caches (see :func:`hildlimits.cache_dir`);
            ``False`` derives from scratch.

    Returns:
        :class:`ODESystem`.

    Example:
        >>> system = derive(Committee(K=2, M=2, activation="erf"))
        >>> system.state_variables
        ('Q', 'R')
    """
    if not isinstance(model, Committee):
        raise TypeError(f"model must be a hildlimits.Committee, got {type(model).__name__}")
    if model.path == "joint":
        import json

        from hildlimits._families.committee.joint import derive_joint

        return derive_joint(
            model.activation,
            model.teacher_activation,
            model.train_second_layer,
            model.loss,
            model.label,
            model.huber_delta,
            model.joint_nodes,
            model.covariance == "spectrum",
            json.dumps(model.structure, sort_keys=True),
        )
    if cache:
        from hildlimits._pipeline.cache import cached_system

        return cached_system(model.structure, lambda: _derive_committee(*_structure_args(model)))
    return _derive_committee.__wrapped__(*_structure_args(model))


def _structure_args(model: Committee):
    return (
        model.activation,
        model.teacher_activation,
        model.train_second_layer,
        model.quadrature_nodes,
        model.line_nodes,
        model.mixture_nodes,
        tuple(
            sorted(
                {
                    **model.loss_structure,
                    **({"covariance": "spectrum"} if model.covariance == "spectrum" else {}),
                    **model.optimizer_structure,
                }.items()
            )
        ),
    )
