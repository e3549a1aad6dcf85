r"""Deep linear networks in the teacher's singular basis: derivation, generated ODE, solve.

Model (``docs/deep-linear.md``)::

    student   \hat y = W_L \cdots W_1 x,  x ~ N(0, I_D),  W_1: H_1 x D, ..., W_L: O x H_{L-1}
    teacher   y = M^* x + \sigma \zeta,   M^* = \sum_\alpha s_\alpha u_\alpha v_\alpha^T,
              \zeta ~ N(0, I_O)
    SGD       W_l <- W_l + (\eta/N) \delta_l h_{l-1}^T   (one fresh sample per step,
              \delta_L = y - \hat y, \delta_{l-1} = W_l^T \delta_l, h_0 = x, h_l = W_l h_{l-1})

with ``D = input_dim * N``, ``O = output_dim * N`` and time ``t = steps / N``. Initialisation:
balanced (or lambda-balanced), aligned modes ``W_1 = \sum_\alpha w_{1\alpha} r^1_\alpha
v_\alpha^T``, ``W_l = \sum_\alpha w_{l\alpha} r^l_\alpha r^{l-1\,T}_\alpha``, ``W_L = \sum_\alpha
w_{L\alpha} u_\alpha r^{L-1\,T}_\alpha`` (orthonormal hidden directions ``r^l_\alpha``, zero
elsewhere).

The limit ``N -> oo`` (at fixed ``eta``, ``L`` and number of modes ``r``): every mode ``alpha``
stays decoupled and is described by its layer strengths ``w_{l\alpha}`` (``l = 1..L``) and two
*bulk* norms created by the SGD noise: ``G_\alpha = |g_\alpha|^2``, the squared norm of the
first layer's row ``r^{1\,T}_\alpha W_1`` outside the teacher's input directions, and
``\Phi_\alpha = |f_\alpha|^2``, that of the last layer's column ``W_L r^{L-1}_\alpha`` outside the
teacher's output directions. The middle layers' noise is ``O(1/N)`` and vanishes. The mode
strength of the network's map is ``\pi_\alpha = u_\alpha^T W_L \cdots W_1 v_\alpha = \prod_l
w_{l\alpha}``; the map is ``\sum_\alpha P_\alpha (w_{L\alpha} u_\alpha + f_\alpha)(w_{1\alpha}
v_\alpha + g_\alpha)^T`` with ``P_\alpha = \prod_{l=2}^{L-1} w_{l\alpha}``.

Derivation (SymPy, :func:`derive_deep_linear`): the per-sample loss of one mode is written in
the four Gaussian fields that enter it (``x.v``, ``x.g/|g|``, ``zeta.u``, ``zeta.f/|f|``),
differentiated (backpropagation) for the increments of ``w_l``, ``G`` and ``Phi``, and averaged
with Wick's rule. The second-order (``eta^2``) increments of the bulk norms keep their ``O(1)``
part: ``(eta/N)^2 |delta_1|^2 |x_perp|^2 -> eta^2 input_dim E[delta_1^2]`` per unit time, and
``(eta/N)^2 h_{L-1}^2 |e_perp|^2 -> eta^2 output_dim sigma^2 E[h_{L-1}^2]``. The mode strengths
themselves get no ``eta^2`` term (they are linear in the weights).

``gradient_flow = true``: time ``tau = eta t`` and the ``eta^2`` terms dropped (the bulk then stays
zero): per mode the Saxe--McClelland--Ganguli equations ``dw_l/dtau = (\pi/w_l)(s - \pi)``.
Both limits share one derivation and one generated module: the ``eta^2`` terms carry the symbol
``eta2`` (``args["eta2"] = eta^2`` for SGD; gradient flow is ``eta = 1``, ``eta2 = 0``).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from hildlimits._errors import ConfigError
from hildlimits._pipeline.runner import RunStatus

STATE = ("w", "G", "Phi")
"""State of the ODE: ``w`` (modes x L) layer strengths, ``G`` and ``Phi`` (modes) bulk norms."""


# ----------------------------------------------------------------------------- initial strengths


def layer_strengths_numpy(pi0, lam: float, depth: int) -> np.ndarray:
    r"""Layer strengths ``(r, L)`` of modes with product ``pi0`` (``r``) and balance ``lam``:
    ``w_l^2 = x + (l-1) lam`` with ``x`` the root of ``prod_l (x + (l-1) lam) = pi0^2``
    (``lam = 0``: ``w_l = pi0^(1/L)``; ``L = 2``: Braun et al.'s
    ``b^2 = (sqrt(lam^2 + 4 pi0^2) - lam)/2``, ``a^2 = b^2 + lam``)."""
    pi0 = np.asarray(pi0, np.float64)
    lam = float(lam)
    ls = np.arange(depth) * lam
    if depth == 2:
        x = 0.5 * (np.sqrt(lam**2 + 4 * pi0**2) - lam)
    else:
        lo = np.full(pi0.shape, max(0.0, -(depth - 1) * lam))
        hi = lo + np.abs(pi0) ** (2.0 / depth)
        for _ in range(200):  # bisection to the last bit
            mid = 0.5 * (lo + hi)
            up = np.prod(mid[..., None] + ls, axis=-1) > pi0**2
            lo, hi = np.where(up, lo, mid), np.where(up, mid, hi)
        x = 0.5 * (lo + hi)
    w = np.sqrt(np.maximum(x[..., None] + ls, 0.0))
    k = 0 if lam >= 0 else -1  # the smallest layer, from the product (as layer_strengths)
    rest = np.prod(np.delete(w, k, axis=-1), axis=-1)
    w[..., k] = np.where(rest > 0, pi0 / np.where(rest > 0, rest, 1.0), w[..., k])
    return w


def layer_strengths(pi0, lam, depth: int):
    """Traceable :func:`layer_strengths_numpy` (bisection to machine precision, then one Newton
    step so that derivatives follow the implicit function theorem)."""
    pi0 = jnp.asarray(pi0)
    lam = jnp.asarray(lam, pi0.dtype)
    ls = jnp.arange(depth, dtype=pi0.dtype) * lam  # (l-1) lam, l = 1..L
    target = pi0**2

    def f(x):
        return jnp.prod(x[..., None] + ls, axis=-1) - target

    if depth == 2:  # closed form (Braun et al.)
        x = 0.5 * (jnp.sqrt(lam**2 + 4 * target) - lam)
    else:
        x_min = jnp.maximum(0.0, -(depth - 1) * lam) + 0.0 * pi0
        lo = jax.lax.stop_gradient(x_min)
        hi = jax.lax.stop_gradient(x_min + jnp.abs(pi0) ** (2.0 / depth))

        def body(_, bracket):
            lo, hi = bracket
            mid = 0.5 * (lo + hi)
            up = f(mid) > 0
            return jnp.where(up, lo, mid), jnp.where(up, mid, hi)

        lo, hi = jax.lax.fori_loop(0, 200, body, (lo, hi))
        x0 = jax.lax.stop_gradient(0.5 * (lo + hi))
        # one Newton step: the value stays x0 (to rounding), the derivative is -f_theta / f_x
        terms = x0[..., None] + ls
        fx = jnp.sum(jnp.prod(terms, axis=-1)[..., None] / jnp.where(terms > 0, terms, 1.0), -1)
        fx = jnp.where(jnp.all(terms > 0, axis=-1), fx, 0.0)
        safe = fx > 0
        x = jnp.where(safe, x0 - f(x0) / jnp.where(safe, fx, 1.0), x0)
        x = jnp.maximum(x, x_min)
    v = x[..., None] + ls
    pos = v > 0
    w = jnp.where(pos, jnp.sqrt(jnp.where(pos, v, 1.0)), 0.0)
    # the smallest layer (the first for lambda >= 0, the last for lambda < 0) from the product,
    # w = pi0 / prod(others): smooth where it vanishes (pi0 = 0, lambda != 0), where its square
    # root is not
    rest_first = jnp.prod(w[..., 1:], axis=-1)
    rest_last = jnp.prod(w[..., :-1], axis=-1)
    first = jnp.where(rest_first > 0, pi0 / jnp.where(rest_first > 0, rest_first, 1.0), w[..., 0])
    last = jnp.where(rest_last > 0, pi0 / jnp.where(rest_last > 0, rest_last, 1.0), w[..., -1])
    w_pos = w.at[..., 0].set(first)
    w_neg = w.at[..., -1].set(last)
    return jnp.where(lam >= 0, w_pos, w_neg)


# ----------------------------------------------------------------------------- derivation


def _moment(k: int) -> int:
    """``E[z^k]`` of a standard normal."""
    if k % 2:
        return 0
    out = 1
    for j in range(k - 1, 0, -2):
        out *= j
    return out


def _expect(expr, gaussians):
    """``E[expr]`` over independent standard normals ``gaussians`` (Wick's rule on monomials)."""
    import sympy as sp

    poly = sp.Poly(sp.expand(expr), *gaussians)
    total = sp.Integer(0)
    for powers, coeff in poly.terms():
        m = 1
        for k in powers:
            m *= _moment(k)
        if m:
            total += m * coeff
    return sp.expand(total)


def symbols(depth: int) -> dict:
    """The SymPy symbols of the derivation (names as in the generated code)."""
    import sympy as sp

    return {
        "w": [sp.Symbol(f"w{l}", real=True) for l in range(1, depth + 1)],
        "G": sp.Symbol("G", nonnegative=True),
        "Phi": sp.Symbol("Phi", nonnegative=True),
        "s": sp.Symbol("s", nonnegative=True),
        "sigma": sp.Symbol("sigma", nonnegative=True),
        "eta": sp.Symbol("eta", positive=True),
        "eta2": sp.Symbol("eta2", positive=True),  # eta^2: the SGD-noise terms (0: gradient flow)
        "din": sp.Symbol("input_dim", positive=True),
        "dout": sp.Symbol("output_dim", positive=True),
    }


def _derive(depth: int) -> dict:
    """Equations (SymPy) of one mode: ``{"w1".."wL", "G", "Phi", "risk", "mode"}``, online SGD
    with the symbol ``eta2`` standing for the ``eta^2`` of the SGD-noise terms (gradient flow:
    ``eta = 1``, ``eta2 = 0``; :meth:`DeepLinearSystem.equations`)."""
    import sympy as sp

    S = symbols(depth)
    w, G, Phi, s, sigma, eta = S["w"], S["G"], S["Phi"], S["s"], S["sigma"], S["eta"]
    eta2 = S["eta2"]
    din, dout = S["din"], S["dout"]
    g, f = sp.symbols("g f", positive=True)  # |g| = sqrt(G), |f| = sqrt(Phi)
    h1 = sp.Symbol("h1", real=True)  # the mode's first hidden unit
    xv, xg, zu, zf = sp.symbols("x_v x_g zeta_u zeta_f", real=True)
    gauss = (xv, xg, zu, zf)
    # forward pass of one mode from its first hidden unit
    h = h1
    for wl in w[1:-1]:
        h = wl * h
    h_last = h  # h_{L-1}
    e_u = s * xv + sigma * zu - w[-1] * h_last  # error along u_alpha
    e_f = sigma * zf - f * h_last  # error along f_alpha / |f_alpha|
    loss = (e_u**2 + e_f**2) / 2  # (+ sigma^2 |zeta_rest|^2 / 2: no parameter)
    fields = {h1: w[0] * xv + g * xg}
    dloss_dh1 = sp.diff(loss, h1).subs(fields)
    loss = loss.subs(fields)

    def mean(expr):
        out = _expect(expr, gauss)
        out = sp.expand(out.subs({g**2: G, f**2: Phi}))
        out = out.subs({g: sp.sqrt(G), f: sp.sqrt(Phi)})
        if out.has(g, f):
            raise AssertionError("odd bulk powers left")  # pragma: no cover
        return sp.expand(out)

    rate = eta
    eqs = {}
    for l, wl in enumerate(w, start=1):
        eqs[f"w{l}"] = sp.factor_terms(-rate * mean(sp.diff(loss, wl)))
    drift_G = -2 * g * sp.diff(loss, g)
    drift_Phi = -2 * f * sp.diff(loss, f)
    dG, dPhi = rate * mean(drift_G), rate * mean(drift_Phi)
    dG += eta2 * din * mean(dloss_dh1**2)
    dPhi += eta2 * dout * sigma**2 * mean(h_last.subs(fields) ** 2)
    eqs["G"] = sp.collect(sp.expand(dG), [eta2, eta])
    eqs["Phi"] = sp.collect(sp.expand(dPhi), [eta2, eta])
    clean = ((w[-1] * h_last - s * xv) ** 2 + (f * h_last) ** 2).subs(fields) / 2
    eqs["risk"] = sp.factor_terms(mean(clean))
    eqs["mode"] = sp.Mul(*w)
    return eqs


# ----------------------------------------------------------------------------- system


@dataclass(frozen=True, eq=False)
class DeepLinearSystem:
    """The derived per-mode ODE of a deep linear network of ``depth`` layers.

    Attributes:
        structure: ``{"family": "deep_linear", "depth": L, "gradient_flow": bool}`` (the
            derivation cache entry itself is keyed without ``gradient_flow``).
        texts: equation name -> SymPy ``srepr`` (``w1``..``wL``, ``G``, ``Phi``, ``risk``,
            ``mode``); parsed on first use of :attr:`equations`.
    """

    structure: dict
    texts: dict
    _jax: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def depth(self) -> int:
        return int(self.structure["depth"])

    @property
    def gradient_flow(self) -> bool:
        return bool(self.structure.get("gradient_flow", False))

    @property
    def equations(self) -> dict:
        """Name -> SymPy expression (per mode; ``risk`` is the mode's share of the risk)."""
        key = ("equations", self.gradient_flow)
        if key not in self._jax:
            import sympy as sp

            raw = {k: sp.sympify(v) for k, v in self.texts.items()}
            S = symbols(self.depth)
            sub = {S["eta"]: 1, S["eta2"]: 0} if self.gradient_flow else {S["eta2"]: S["eta"] ** 2}
            self._jax[key] = {k: v.subs(sub) for k, v in raw.items()}
        return self._jax[key]

    @property
    def raw_equations(self) -> dict:
        """The equations of the generated code (symbol ``eta2`` for the ``eta^2`` terms)."""
        import sympy as sp

        return {k: sp.sympify(v) for k, v in self.texts.items()}

    def __str__(self) -> str:
        return format_system(self, latex=False)

    def latex(self) -> str:
        return format_system(self, latex=True)

    def markdown(self) -> str:
        L, gf = self.depth, self.gradient_flow
        what = "gradient flow (τ = η t)" if gf else "online SGD (t = steps / N)"
        return "\n".join(
            [
                f"# Deep linear network, depth L = {L}: mode ODEs, {what}",
                "",
                "Generated by `hildlimits` from the model description; do not edit by hand.",
                "",
                "$$",
                format_system(self, latex=True),
                "$$",
                "",
                "```",
                format_system(self, latex=False),
                "```",
                "",
            ]
        )

    @property
    def source(self) -> str:
        if "source" not in self._jax:
            self._jax["source"] = _generate_source(self)
        return self._jax["source"]

    @property
    def module(self):
        if "module" not in self._jax:
            from hildlimits._engine.codegen import load_module

            self._jax["module"] = load_module(source=self.source, kind="deep_linear")
        return self._jax["module"]


def _order(depth: int) -> list[str]:
    return [f"w{l}" for l in range(1, depth + 1)] + ["G", "Phi"]


def format_system(system: DeepLinearSystem, *, latex: bool) -> str:
    import sympy as sp

    eqs = system.equations
    L = system.depth
    var = "\\tau" if system.gradient_flow else "t"
    lines = []
    names = _order(L) + ["risk", "mode"]
    for name in names:
        expr = eqs[name]
        if latex:
            lhs = {
                "G": f"\\frac{{dG_\\alpha}}{{d{var}}}",
                "Phi": f"\\frac{{d\\Phi_\\alpha}}{{d{var}}}",
                "risk": "\\mathcal{R}_\\alpha",
                "mode": "\\pi_\\alpha",
            }.get(name, f"\\frac{{dw_{{{name[1:]},\\alpha}}}}{{d{var}}}")
            lines.append(f"{lhs} &= {sp.latex(expr)} \\\\")
        else:
            lhs = {
                "G": f"dG/d{'τ' if system.gradient_flow else 't'}",
                "Phi": f"dΦ/d{'τ' if system.gradient_flow else 't'}",
                "risk": "risk_α",
                "mode": "π_α",
            }.get(name, f"d{name}/d{'τ' if system.gradient_flow else 't'}")
            lines.append(f"{lhs} = {sp.sstr(expr)}")
    if latex:
        return "\\begin{aligned}\n" + "\n".join(lines) + "\n\\end{aligned}"
    head = (
        f"deep linear network, L = {L}, per mode α (s = s_α, w_l = w_lα, "
        "G = |g_α|², Φ = |f_α|²); risk = Σ_α risk_α"
    )
    return head + "\n" + "\n".join(lines)


def _generate_source(system: DeepLinearSystem) -> str:
    """JAX source: ``vector_field(t, y, args)``, ``risk_per_mode``, ``risk``, ``modes``
    (vectorised over the trailing mode axis)."""
    from hildlimits._engine.codegen import _IMPORTS, _cse_body, _Printer

    L = system.depth
    eqs = system.raw_equations
    printer = _Printer()
    unpack = [
        '    w = y["w"]',
        *[f"    w{l} = w[..., {l - 1}]" for l in range(1, L + 1)],
        '    G = y["G"]',
        '    Phi = y["Phi"]',
        '    s = args["s"]',
        '    sigma = args["sigma"]',
        '    eta = args["eta"]',
        '    eta2 = args["eta2"]',
        '    input_dim = args["input_dim"]',
        '    output_dim = args["output_dim"]',
        "    zero = 0.0 * (w1 + G + Phi + s)",
    ]
    names = _order(L)
    result = (
        '{{"w": jnp.stack(['
        + ", ".join(f"zero + ({{{i}}})" for i in range(L))
        + '], axis=-1), "G": zero + ({'
        + str(L)
        + '}), "Phi": zero + ({'
        + str(L + 1)
        + "})}}"
    )
    lines = [
        f'"""Generated by hildlimits: deep linear network, depth {L} (online SGD; gradient '
        'flow: eta = 1, eta2 = 0). Do not edit."""',
        "",
        *_IMPORTS,
        "",
        "",
        "def vector_field(t, y, args):",
        '    """d(w, G, Phi)/dt of every mode (trailing axis: modes)."""',
        *unpack,
    ]
    lines += _cse_body([eqs[n] for n in names], printer, result)
    lines += ["", "", "def risk_per_mode(y, args):", '    """Each mode\'s share of the risk."""']
    lines += unpack
    lines += _cse_body([eqs["risk"]], printer, "zero + ({0})")
    lines += [
        "",
        "",
        "def risk(y, args):",
        '    """(1/2) |W_L...W_1 - M*|_F^2."""',
        "    return jnp.sum(risk_per_mode(y, args), axis=-1)",
        "",
        "",
        "def modes(y, args):",
        '    """Mode strengths pi_alpha = prod_l w_l."""',
        '    return jnp.prod(y["w"], axis=-1)',
        "",
    ]
    return "\n".join(lines)


def _to_json(system: DeepLinearSystem) -> dict:
    from hildlimits._pipeline.cache import FORMAT, content_digest

    data = {
        "format": FORMAT,
        "structure": system.structure,
        "texts": dict(system.texts),
        "source": system.source,
    }
    data["digest"] = content_digest(data)
    return data


def _from_json(data: dict, rebuild=None) -> DeepLinearSystem:
    if not isinstance(data.get("texts"), dict) or not isinstance(data.get("source"), str):
        raise ValueError("malformed deep_linear entry")
    system = DeepLinearSystem(structure=data["structure"], texts=dict(data["texts"]))
    system._jax["source"] = data["source"]
    return system


def _build(depth: int) -> DeepLinearSystem:
    import sympy as sp

    eqs = _derive(depth)
    return DeepLinearSystem(
        structure=_base_structure(depth), texts={k: sp.srepr(v) for k, v in eqs.items()}
    )


def _base_structure(depth: int) -> dict:
    return {"family": "deep_linear", "depth": int(depth)}


def structure(depth: int, gradient_flow: bool) -> dict:
    return {"family": "deep_linear", "depth": int(depth), "gradient_flow": bool(gradient_flow)}


@functools.lru_cache(maxsize=32)
def derive_deep_linear(depth: int, gradient_flow: bool = False) -> DeepLinearSystem:
    r"""Derive (or read from the derivation cache) the per-mode ODE of a depth-``depth`` deep
    linear network (see the module docstring). Online SGD and gradient flow share one derivation
    and one generated module (gradient flow is ``eta = 1`` with the ``eta^2`` terms off), so
    their compiled solves are shared too; the returned system prints the equations of its own
    limit.

    Example:
        >>> system = derive_deep_linear(2, gradient_flow=True)
        >>> str(system.equations["w1"])
        '-Phi*w1 + s*w2 - w1*w2**2'
    """
    from hildlimits._pipeline.cache import cached_system

    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 2:
        raise ConfigError(f"model.depth must be an integer >= 2, got {depth!r}")
    base = cached_system(
        _base_structure(depth),
        lambda: _build(depth),
        to_json=_to_json,
        from_json=_from_json,
    )
    return DeepLinearSystem(
        structure=structure(depth, gradient_flow), texts=base.texts, _jax=base._jax
    )


# ----------------------------------------------------------------------------- solve


@dataclass(frozen=True, eq=False)
class DeepLinearTrajectory:
    """Solution of the mode ODEs at the save times (read-only arrays).

    Attributes:
        t: save times (``steps / N``; ``tau = eta steps / N`` under gradient flow).
        risk: ``(n,)`` ``(1/2)|W_L...W_1 - M*|_F^2``.
        modes: ``(n, r)`` mode strengths ``pi_alpha = u_alpha^T W_L...W_1 v_alpha``.
        layers: ``(n, r, L)`` layer strengths ``w_{l alpha}``.
        bulk_input, bulk_output: ``(n, r)`` ``G_alpha``, ``Phi_alpha``.
    """

    t: np.ndarray
    risk: np.ndarray
    modes: np.ndarray
    layers: np.ndarray
    bulk_input: np.ndarray
    bulk_output: np.ndarray
    teacher: np.ndarray
    status: RunStatus
    t_stop: float
    num_steps: int
    gradient_flow: bool
    timings: dict = field(default_factory=dict)

    @property
    def diverged(self) -> bool:
        return self.status.diverged

    @property
    def map_norm_sq(self) -> np.ndarray:
        """``(n, r)``: ``|P_alpha (w_L u + f)(w_1 v + g)^T|_F^2``, the squared Frobenius norm of
        each mode's part of the network's map (``pi_alpha^2`` without bulk)."""
        w = self.layers
        mid = np.prod(w[..., 1:-1], axis=-1) ** 2
        return mid * (w[..., -1] ** 2 + self.bulk_output) * (w[..., 0] ** 2 + self.bulk_input)

    def to_dict(self) -> dict:
        return {
            "t": self.t.tolist(),
            "risk": self.risk.tolist(),
            "modes": self.modes.tolist(),
            "layers": self.layers.tolist(),
            "bulk_input": self.bulk_input.tolist(),
            "bulk_output": self.bulk_output.tolist(),
            "map_norm_sq": self.map_norm_sq.tolist(),
            "teacher_singular_values": self.teacher.tolist(),
            "effective_map": "sum_a modes[a] u_a v_a^T + bulk (aligned modes: modes are the "
            "singular values of W_L...W_1 along the teacher's singular vectors)",
            "status": str(self.status),
            "t_stop": self.t_stop,
            "num_steps": self.num_steps,
            "time_unit": "tau = lr * steps / N" if self.gradient_flow else "t = steps / N",
        }


def dynamics(system: DeepLinearSystem, *, schedule: bool = False):
    """The mode ODE as a :class:`~hildlimits._families.Dynamics` (shared runner);
    ``schedule``: the learning rate ``eta`` piecewise constant in ``t``."""
    from hildlimits._families.base import Dynamics

    mod = system.module

    def vf(t, y, args):
        return mod.vector_field(t, y, args)

    def risk_fn(y, args):
        return mod.risk(y, args)

    def apply(args, value):
        return {**args, "eta": value, "eta2": value**2}

    return Dynamics(
        vector_field=vf,
        risk=risk_fn,
        key=("deep_linear", system.depth),
        cache=system._jax,
        schedule=apply if schedule else None,
    )


def make_args(*, s, sigma, eta, input_dim, output_dim, gradient_flow: bool) -> dict:
    """``args`` of the vector field; gradient flow: ``eta = 1`` and the ``eta^2`` terms off."""
    f64 = np.float64
    return {
        "s": np.asarray(s, f64),
        "sigma": f64(sigma),
        "eta": f64(1.0 if gradient_flow else eta),
        "eta2": f64(0.0 if gradient_flow else eta**2),
        "input_dim": f64(input_dim),
        "output_dim": f64(output_dim),
    }


def initial_state(pi0, lam: float, depth: int) -> dict:
    w = layer_strengths_numpy(np.asarray(pi0, np.float64), lam, depth)
    r = w.shape[0]
    return {"w": w, "G": np.zeros(r), "Phi": np.zeros(r)}


def solve_deep_linear(
    system: DeepLinearSystem,
    *,
    y0: dict,
    args: dict,
    ts: np.ndarray,
    rtol: float,
    atol: float,
    solver: str,
    max_steps: int,
    steady: bool = False,
    schedule=None,
) -> DeepLinearTrajectory:
    """Integrate the mode ODE from ``y0`` with ``args`` (bounds included) at save times ``ts``."""
    from hildlimits._pipeline import runner as _runner

    sched = schedule
    if sched is not None and system.gradient_flow:
        raise ConfigError(
            "a learning-rate schedule needs online SGD (training.gradient_flow = false): under "
            "gradient flow time is tau = lr * t and lr does not enter the ODE"
        )
    dyn = dynamics(system, schedule=sched is not None)
    with jax.enable_x64(True):
        args = dict(args)
        if sched is not None:
            args["_sched_edges"] = np.asarray(sched.edges, np.float64)
            args["_sched_values"] = np.asarray(sched.values, np.float64)
        run = _runner.compiled_dynamics(dyn, solver=solver, max_steps=max_steps, steady=steady)
        t0 = time.perf_counter()
        out = _runner.run_once(run, y0, args, ts, rtol=rtol, atol=atol)
        t_run = time.perf_counter() - t0
    status = _runner.check_stop(out, float(ts[-1]), max_steps)
    rows = _runner.kept_rows(out, status)

    def ro(x):
        x = np.array(x, np.float64)
        x.setflags(write=False)
        return x

    ys = out["ys"]
    w = np.asarray(ys["w"])[rows]
    return DeepLinearTrajectory(
        t=ro(np.asarray(out["ts"])[rows]),
        risk=ro(np.asarray(out["risk"])[rows]),
        modes=ro(np.prod(w, axis=-1)),
        layers=ro(w),
        bulk_input=ro(np.asarray(ys["G"])[rows]),
        bulk_output=ro(np.asarray(ys["Phi"])[rows]),
        teacher=ro(args["s"]),
        status=status,
        t_stop=float(np.asarray(out["ts"])[-1]),
        num_steps=int(out["num_steps"]),
        gradient_flow=system.gradient_flow,
        timings={"compile_and_run": t_run},
    )
