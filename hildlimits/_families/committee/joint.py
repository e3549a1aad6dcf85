r"""The joint derivation: any loss and label map, through the joint numerical backend.

SymPy writes the loss ``l(yhat, y)``, its derivative ``l'`` in ``yhat``, the label map and the
activations; the drift of online SGD is then, exactly as for the square loss (``t = steps/N``),

    dQ_ik/dt = -eta (E[delta_i lambda_k] + E[delta_k lambda_i]) + eta^2 E[delta_i delta_k]
               - 2 eta kappa Q_ik,
    dR_in/dt = -eta E[delta_i nu_n] - eta kappa R_in,
    dv_i/dt  = -eta_v E[l' g(lambda_i)],

with ``delta_i = d l / d lambda_i = l'(yhat, label(y)) v_i g'(lambda_i)``; the expectations are
over the joint law of the ``K + M`` fields and the noise, taken by
:func:`hildlimits._engine.joint.joint_moments`. With a ``[data]`` spectrum the same moments drive
the per-bin overlaps (:func:`hildlimits._engine.joint.spectral_rates`).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field

import sympy as sp

from hildlimits._engine import activations as A
from hildlimits._engine.activations import get_activation
from hildlimits._families.committee import loss as L

_IMPORTS = (
    "import jax",
    "import jax.numpy as jnp",
    "import jax.scipy.special",
    "",
    "from hildlimits._engine.joint import (",
    "    field_covariances,",
    "    isotropic_rates,",
    "    joint_moments,",
    "    spectral_rates,",
    ")",
)


@dataclass(frozen=True, eq=False)
class JointSystem:
    """A derived system whose drift is taken by the joint numerical backend.

    Same interface as :class:`~hildlimits.ODESystem`: :attr:`state_variables`,
    :attr:`observable_names`, :attr:`source`, :attr:`module`, ``str()``, :meth:`latex`,
    :meth:`markdown`, :meth:`write_source`.
    """

    structure: dict
    functions: dict  # name -> (SymPy expression, argument symbols)
    rule: dict  # the joint rule's static options (mode, kinks, values, ...)
    _jax: dict = field(default_factory=dict, repr=False, compare=False)
    expectations: tuple = ()

    @property
    def spectral(self) -> bool:
        return self.structure.get("covariance") == "spectrum"

    @property
    def state_variables(self) -> tuple[str, ...]:
        return ("Q", "R", "v") if self.structure["train_second_layer"] else ("Q", "R")

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
        names = ["risk", "loss"]
        if self.rule["classification"]:
            names.append("classification_error")
        return tuple(names)

    @property
    def method(self) -> str:
        r = self.rule
        noise = {
            "constant": "exact sum over the label's values (normal probabilities)",
            "panels": f"Gauss-Legendre panels split at the label's kinks {list(r['kinks'])}",
            "smooth": "Gauss-Hermite",
        }[r["mode"]]
        follow = []
        if r["student_kinks"]:
            follow.append(f"student kinks at {list(r['student_kinks'])}")
        if r["teacher_kinks"]:
            follow.append(f"teacher kinks at {list(r['teacher_kinks'])}")
        if r["kinks"]:
            follow.append(
                "the label's kinks (planes for a linear or one odd teacher unit, "
                "else roots along each line)"
            )
        if r["classification"]:
            follow.append("the jump of the classification error at yhat = 0 (observables)")
        lead = (
            f" with Gauss-Legendre panels following {', '.join(follow)} (<= 4 fields)"
            if follow
            else ""
        )
        return (
            "joint numerical rule: fields by tensor Gauss-Hermite (<= 4 fields; scrambled "
            f"Sobol' beyond){lead}; noise by {noise}"
        )

    # --- description -------------------------------------------------------------
    def __str__(self) -> str:
        st = self.structure
        f = self.functions
        lines = [
            "Online SGD ODEs (N -> inf, t = steps/N) for a two-layer committee: K student "
            f"'{st['activation']}' units, M teacher '{st['teacher_activation']}' units, second "
            f"layer {'trained' if st['train_second_layer'] else 'fixed'}, loss "
            f"'{st['loss']}', label '{st['label']}'"
            + (", inputs x ~ N(0, Sigma) given by a spectrum" if self.spectral else "")
            + ".",
            f"state: {', '.join(self.state_variables)}   parameters: "
            f"{', '.join(self.parameters)}   observables: {', '.join(self.observable_names)}",
            f"g(x) = {sp.sstr(f['g'][0])},  g'(x) = {sp.sstr(f['g_prime'][0])},  "
            f"g_*(x) = {sp.sstr(f['g_teacher'][0])}",
            f"label(y) = {sp.sstr(f['label'][0])}   (y = sum_n v*_n g_*(nu_n) + sigma zeta)",
            f"l(yhat, y) = {sp.sstr(f['ell'][0])}",
            f"l'(yhat, y) = dl/dyhat = {sp.sstr(f['ell_prime'][0])}",
            "",
            "delta_i = l'(yhat, label(y)) v_i g'(lambda_i),  yhat = sum_j v_j g(lambda_j)",
        ]
        if self.spectral:
            lines += [
                "A_i = C^{-1} E[z delta_i]   (z = (nu, lambda), C their covariance)",
                "dQ^b_ik/dt = -eta s_b ([R^b_k, Q^b_k].A_i + [R^b_i, Q^b_i].A_k)"
                " + eta^2 s_b p_b E[delta_i delta_k] - 2 eta kappa Q^b_ik",
                "dR^b_in/dt = -eta s_b [T^b_n, R^b_.n].A_i - eta kappa R^b_in",
                "Q = sum_b s_b Q^b,  R = sum_b s_b R^b,  T = sum_b s_b T^b  (field covariances)",
            ]
        else:
            lines += [
                "dQ_ik/dt = -eta (E[delta_i lambda_k] + E[delta_k lambda_i]) "
                "+ eta^2 E[delta_i delta_k] - 2 eta kappa Q_ik",
                "dR_in/dt = -eta E[delta_i nu_n] - eta kappa R_in",
            ]
        if st["train_second_layer"]:
            lines.append("dv_i/dt = -eta_v E[l'(yhat, label(y)) g(lambda_i)]")
        lines += [
            "risk = E[(yhat - label(sum_n v*_n g_*(nu_n)))^2] / 2,  loss = E[l(yhat, label(y))]"
            + (
                ",  classification_error = P(yhat label(y) <= 0)"
                if self.rule["classification"]
                else ""
            ),
            "",
            f"Expectations: {self.method}.",
        ]
        return "\n".join(lines)

    def latex(self) -> str:
        f = self.functions
        rows = [
            rf"g(x) &= {sp.latex(f['g'][0])}, \quad g_*(x) = {sp.latex(f['g_teacher'][0])}",
            rf"\ell(\hat y, y) &= {sp.latex(f['ell'][0])}",
            rf"\partial_{{\hat y}}\ell(\hat y, y) &= {sp.latex(f['ell_prime'][0])}",
            rf"\mathrm{{label}}(y) &= {sp.latex(f['label'][0])}",
            r"\delta_i &= \partial_{\hat y}\ell(\hat y, \mathrm{label}(y))\, v_i\, g'(\lambda_i)",
        ]
        if self.spectral:
            rows += [
                r"A_i &= C^{-1}\,\mathbb{E}[z\,\delta_i]",
                r"\frac{dQ^b_{ik}}{dt} &= -\eta s_b\left([R^b_k, Q^b_k]\cdot A_i + "
                r"[R^b_i, Q^b_i]\cdot A_k\right) + \eta^2 s_b p_b\,\mathbb{E}[\delta_i\delta_k] "
                r"- 2\eta\kappa Q^b_{ik}",
                r"\frac{dR^b_{in}}{dt} &= -\eta s_b [T^b_n, R^b_{\cdot n}]\cdot A_i - \eta\kappa R^b_{in}",
            ]
        else:
            rows += [
                r"\frac{dQ_{ik}}{dt} &= -\eta\,\mathbb{E}[\delta_i\lambda_k + \delta_k\lambda_i] "
                r"+ \eta^2\,\mathbb{E}[\delta_i\delta_k] - 2\eta\kappa Q_{ik}",
                r"\frac{dR_{in}}{dt} &= -\eta\,\mathbb{E}[\delta_i\nu_n] - \eta\kappa R_{in}",
            ]
        if self.structure["train_second_layer"]:
            rows.append(
                r"\frac{dv_i}{dt} &= -\eta_v\,\mathbb{E}[\partial_{\hat y}\ell\, g(\lambda_i)]"
            )
        return "\\begin{align}\n" + " \\\\\n".join(rows) + "\n\\end{align}"

    def markdown(self) -> str:
        st = self.structure
        return "\n".join(
            [
                f"# Online SGD ODEs: {st['activation']} student, {st['teacher_activation']} "
                f"teacher, loss `{st['loss']}`, label `{st['label']}`",
                "",
                "Generated by `hildlimits` from the model description; do not edit by hand.",
                "",
                f"- state variables: {', '.join(self.state_variables)}",
                f"- parameters: {', '.join(self.parameters)}",
                f"- observables: {', '.join(self.observable_names)}",
                f"- expectations: {self.method}",
                "",
                "$$",
                self.latex()
                .replace("\\begin{align}", "\\begin{aligned}")
                .replace("\\end{align}", "\\end{aligned}"),
                "$$",
                "",
            ]
        )

    # --- code ------------------------------------------------------------------------
    @property
    def source(self) -> str:
        if "source" not in self._jax:
            self._jax["source"] = generate_joint_source(self)
        return self._jax["source"]

    @property
    def module(self):
        if "module" not in self._jax:
            from hildlimits._engine.codegen import load_module
            from hildlimits._pipeline.cache import cache_key

            self._jax["module"] = load_module(
                source=self.source, key=cache_key(self.structure), kind="joint"
            )
        return self._jax["module"]

    def write_source(self, path) -> None:
        from pathlib import Path

        Path(path).write_text(self.source)


def _batch_kw(system) -> str:
    """The mini-batch argument of the rate assembly (derivations with ``minibatch``)."""
    return ' batch=args["batch"],' if system.structure.get("minibatch") else ""


def generate_joint_source(system: JointSystem) -> str:
    from hildlimits._engine.codegen import _Printer, function_source, header

    info = header(system)
    printer = _Printer()
    trained = system.structure["train_second_layer"]
    lines = [
        '"""Generated by hildlimits -- do not edit.',
        "",
        f"inputs: {json.dumps(info['inputs'], sort_keys=True)}",
        f"hildlimits {info['hildlimits']}, sympy {info['sympy']}, derivation key {info['key']}",
        "",
        f"expectations: {system.method}",
        '"""',
        "",
        *_IMPORTS,
        "",
        "STATE = " + repr(system.state_variables),
        "RISK_EVENT = False  # one risk costs as much as one drift: checked at save times",
        "RISK_MAP = True",
        "",
    ]
    docs = {
        "g": "student activation",
        "g_prime": "its derivative",
        "g_teacher": "teacher activation",
        "label": "label map of the noisy teacher output",
        "ell": "loss l(yhat, y)",
        "ell_prime": "dl/dyhat",
    }
    for name, (expr, args) in system.functions.items():
        body = function_source(name, [str(a) for a in args], expr, docs[name], printer)
        lines += body + ["", ""]
    head = []
    for _name, definition in printer.primitives.values():
        head += definition + ["", ""]
    lines = (
        lines[: lines.index("STATE = " + repr(system.state_variables))]
        + head
        + lines[lines.index("STATE = " + repr(system.state_variables)) :]
    )
    rule = dict(system.rule)
    lines += [
        "RULE = " + repr(rule),
        "",
        "",
        "def moments(y, args, observables=True):",
        '    """Moments F, H, D, G (and the observables) at field covariances y["Q"], y["R"]."""',
        '    v = y["v"] if "v" in y else args["v"]',
        "    return joint_moments(",
        '        y["Q"], y["R"], args["T"], v, args["v_teacher"], args["sigma"],',
        "        g=g, g_prime=g_prime, g_teacher=g_teacher, label=label, loss=ell,",
        "        dloss=ell_prime, observables=observables, **RULE,",
        "    )",
        "",
        "",
    ]
    if system.spectral:
        lines += [
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
            "    m = moments(fy, fa, observables=False)",
            "    dQ, dR = spectral_rates(",
            '        m, y["Q"], y["R"], args["T"], args["s"], args["p"], args["eta"], args["kappa"],',
            '        fields=(fy["Q"], fy["R"], fa["T"]),' + _batch_kw(system),
            "    )",
        ]
    else:
        lines += [
            "def _fields(y, args):",
            "    return y, args",
            "",
            "",
            "def vector_field(t, y, args):",
            '    """Right-hand side d(state)/dt."""',
            "    m = moments(y, args, observables=False)",
            '    dQ, dR = isotropic_rates(m, y["Q"], y["R"], args["eta"], args["kappa"],'
            + _batch_kw(system)
            + ")",
        ]
    if trained:
        lines += [
            '    return {"Q": dQ, "R": dR, "v": -args["eta_v"] * m["G"]}',
        ]
    else:
        lines += ['    return {"Q": dQ, "R": dR}']
    lines += ["", ""]
    if system.structure.get("adagrad"):
        lines += [
            "def grad_sq(y, args):",
            '    """sum_i E[(dl/dlambda_i)^2] (the AdaGrad-Norm accumulator, before |x|^2/N)."""',
            '    return jnp.trace(moments(*_fields(y, args), observables=False)["D"])',
            "",
            "",
        ]
    for obs in system.observable_names:
        if obs == "grad_sq":
            continue
        lines += [
            f"def {obs}(y, args):",
            f'    """Observable {obs}."""',
            f'    return moments(*_fields(y, args))["{obs}"]',
            "",
            "",
        ]
    return "\n".join(lines).rstrip() + "\n"


@functools.lru_cache(maxsize=32)
def derive_joint(
    activation: str,
    teacher_activation: str,
    train_second_layer: bool,
    loss: str,
    label: str,
    huber_delta: float,
    joint_nodes: int | None,
    spectral: bool,
    structure_json: str,
) -> JointSystem:
    X = A.X
    student = get_activation(activation, student=True)
    teacher = get_activation(teacher_activation, field="teacher_activation")
    ell = L.loss_expression(loss, huber_delta)
    lab = L.label_expression(label)
    g = student.expr
    gp = sp.diff(g, X)
    functions = {
        "g": (g, (X,)),
        "g_prime": (gp, (X,)),
        "g_teacher": (teacher.expr, (X,)),
        "label": (lab, (L.Y,)),
        "ell": (ell, (L.YHAT, L.Y)),
        "ell_prime": (sp.diff(ell, L.YHAT), (L.YHAT, L.Y)),
    }
    kinks = L.kink_points(lab)
    slope = sp.diff(lab, L.Y)
    constant = (
        kinks is not None
        and len(kinks) > 0
        and not slope.replace(sp.DiracDelta, lambda *a: sp.S.Zero).has(L.Y)
        and sp.simplify(slope.replace(sp.DiracDelta, lambda *a: sp.S.Zero)) == 0
    )
    if constant:
        reps = (
            [kinks[0] - 1.0]
            + [(a + b) / 2 for a, b in zip(kinks[:-1], kinks[1:], strict=True)]
            + [kinks[-1] + 1.0]
        )
        values = tuple(float(lab.subs(L.Y, r)) for r in reps)
        mode = "constant"
    elif kinks:
        values, mode = (), "panels"
    else:
        values, mode, kinks = (), "smooth", ()
    if kinks is None:  # kinks not at fixed points of y: panels cannot follow them
        values, mode, kinks = (), "smooth", ()
    t0 = teacher.expr.subs(X, 0)
    skinks = L.kink_points(g.xreplace({X: L.Y}))
    skinks = tuple(float(c) for c in skinks) if skinks else ()
    tkinks = L.kink_points(teacher.expr.xreplace({X: L.Y}))
    tkinks = tuple(float(c) for c in tkinks) if tkinks else ()
    g0 = g.subs(X, 0)
    increasing = (
        all(float(gp.subs(X, x)) > 0 for x in (-2.0, -0.5, 0.5, 2.0)) if not skinks else False
    )
    rule = {
        "mode": mode,
        "kinks": tuple(float(k) for k in kinks),
        "values": values,
        "student_kinks": skinks,
        "teacher_kinks": tkinks,
        "teacher_linear": bool(sp.simplify(teacher.expr - X) == 0),
        "teacher_zero": bool(t0 == 0),
        "sign_kink": bool(g0 == 0 and increasing),
        "classification": L.is_binary(lab),
        "nodes": joint_nodes,
    }
    return JointSystem(structure=json.loads(structure_json), functions=functions, rule=rule)
