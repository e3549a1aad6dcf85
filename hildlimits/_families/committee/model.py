"""Immutable, validated model specifications.

* :class:`Committee` -- the *structure* of a two-layer teacher-student problem (it alone decides
  the derived equations, so it alone keys the derivation cache);
* :class:`Hyperparams` -- numeric training parameters (learning rates, noise, weight decay);
* :class:`Overlaps` -- order parameters ``Q, R, T`` and second layers ``v, v*`` (the initial
  condition of the ODE, or any state of it).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import numpy as np

from hildlimits._engine.activations import get_activation
from hildlimits._errors import ConfigError
from hildlimits._pipeline.validators import boolean as _bool
from hildlimits._pipeline.validators import matrix as _matrix
from hildlimits._pipeline.validators import positive_int as _positive_int
from hildlimits._pipeline.validators import real as _real


@dataclass(frozen=True)
class Committee:
    r"""Two-layer teacher-student committee: ``K`` student units, ``M`` teacher units.

    Student ``\hat y = \sum_i v_i g(\lambda_i)``, teacher ``y = \sum_n v^*_n g_*(\nu_n) + \sigma\zeta``,
    loss ``l(\hat y, label(y))`` (square by default), online SGD (conventions in the README).

    Args:
        K: number of student hidden units.
        M: number of teacher hidden units.
        activation: student activation name (see :func:`hildlimits.available_activations`).
        teacher_activation: teacher activation name (default: same as the student).
        train_second_layer: whether the student's second layer ``v`` is trained.
        quadrature_nodes: Gauss--Hermite nodes per dimension for expectations without a closed
            form (default: 96, 48, 32, 20 for 1, 2, 3, 4 fields).
        line_nodes: Gauss--Legendre nodes of the one-dimensional Price line integral used for
            products of four odd factors such as ReLU's four-point terms (default 12).
        mixture_nodes: nodes per mixture variable of the Kolmogorov scale-mixture rule used for
            expectations of factors polynomial in ``tanh`` (``tanh``, ``sigmoid``, their
            derivatives; default: 16, 12, 10, 8 for 1, 2, 3, 4 mixture variables, Gauss--Hermite
            beyond four); ``0`` turns the path off (Gauss--Hermite quadrature instead).
        loss: ``"square"`` (default), ``"logistic"``, ``"correlation"``, ``"huber"`` or an
            expression in ``yhat`` and ``y`` (:mod:`hildlimits._families.committee.loss`).
        label: the label as an expression in the noisy teacher output ``y`` (default ``"y"``).
        huber_delta: the Huber loss's threshold (default 1).
        joint_nodes: nodes per field dimension of the joint numerical rule (losses and labels
            whose drift does not factorise; default by the number of fields, see
            :mod:`hildlimits._engine.joint`).
        covariance: ``"identity"`` (``x ~ N(0, I)``) or ``"spectrum"`` (``x ~ N(0, Sigma)`` given
            by bins; set by a ``[data]`` section: the state is one set of overlaps per bin).
        minibatch: derive with the batch size ``B`` as a parameter (the SGD-noise terms, of
            order ``eta^2``, carry ``1/B``); needed by ``Hyperparams.batch_size`` other than 1,
            batch schedules and gradient flow (``B = inf``). Set by the config when
            ``[training]`` has ``batch_size``, ``batch_schedule`` or ``gradient_flow``.
        adagrad: also derive the observable ``grad_sq = sum_i E[(dl/dlambda_i)^2]`` (the mean
            squared gradient norm AdaGrad-Norm accumulates); needed by
            ``Hyperparams.optimizer = "adagrad_norm"``.

    Example:
        >>> Committee(K=2, M=2, activation="erf").teacher_activation
        'erf'
    """

    K: int
    M: int
    activation: str = "erf"
    teacher_activation: str | None = None
    train_second_layer: bool = False
    quadrature_nodes: int | None = None
    line_nodes: int | None = None
    mixture_nodes: int | None = None
    loss: str = "square"
    label: str = "y"
    huber_delta: float = 1.0
    joint_nodes: int | None = None
    covariance: str = "identity"
    minibatch: bool = False
    adagrad: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "K", _positive_int("K", self.K))
        _bool("minibatch", self.minibatch)
        _bool("adagrad", self.adagrad)
        if self.covariance not in ("identity", "spectrum"):
            raise ConfigError(
                f"covariance must be 'identity' or 'spectrum', got {self.covariance!r}"
            )
        if self.joint_nodes is not None:
            object.__setattr__(
                self, "joint_nodes", _positive_int("model.joint_nodes", self.joint_nodes)
            )
        if not (self.loss == "square" and self.label == "y" and self.huber_delta == 1.0):
            from hildlimits._families.committee.loss import check_loss

            object.__setattr__(
                self, "huber_delta", check_loss(self.loss, self.label, self.huber_delta)
            )
        object.__setattr__(self, "M", _positive_int("M", self.M))
        for name in ("quadrature_nodes", "line_nodes"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, _positive_int(f"model.{name}", getattr(self, name)))
        if self.mixture_nodes is not None:
            value = self.mixture_nodes
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise ConfigError(
                    f"model.mixture_nodes must be a non-negative integer (0: off), got {value!r}"
                )
            object.__setattr__(self, "mixture_nodes", int(value))
        get_activation(self.activation, field="activation", student=True)
        if self.teacher_activation is None:
            object.__setattr__(self, "teacher_activation", self.activation)
        get_activation(self.teacher_activation, field="teacher_activation")
        _bool("train_second_layer", self.train_second_layer)

    @property
    def structure(self) -> dict:
        """What the derived equations depend on (``K`` and ``M`` stay symbolic)."""
        return {
            "family": "committee",
            "activation": self.activation,
            "teacher_activation": self.teacher_activation,
            "train_second_layer": self.train_second_layer,
            "quadrature_nodes": self.quadrature_nodes,
            "line_nodes": self.line_nodes,
            "mixture_nodes": self.mixture_nodes,
            **self.loss_structure,
            **({"covariance": "spectrum"} if self.covariance == "spectrum" else {}),
            **self.optimizer_structure,
        }

    @property
    def optimizer_structure(self) -> dict:
        """The optimiser keys of :attr:`structure` (none for plain SGD, so that today's
        derivations keep their keys)."""
        return {
            **({"minibatch": True} if self.minibatch else {}),
            **({"adagrad": True} if self.adagrad else {}),
        }

    @property
    def loss_structure(self) -> dict:
        """The loss keys of :attr:`structure` (none for the square loss on identity labels, so
        that today's derivations keep their keys)."""
        if self.loss == "square" and self.label == "y":
            return {}
        out = {"loss": self.loss, "label": self.label}
        if self.loss == "huber":
            out["huber_delta"] = self.huber_delta
        if self.joint_nodes is not None:
            out["joint_nodes"] = self.joint_nodes
        return out

    @property
    def path(self) -> str:
        """``"closed"`` (closed-form templates) or ``"joint"`` (the joint numerical backend)."""
        if self.loss == "square" and self.label == "y":
            return "closed"
        from hildlimits._families.committee.loss import path_of

        return path_of(self.loss, self.label, self.huber_delta)


OPTIMIZERS = ("sgd", "adagrad_norm")


@dataclass(frozen=True)
class Hyperparams:
    """Training parameters.

    Args:
        lr: first-layer learning rate ``eta`` (>= 0).
        lr_second_layer: second-layer learning rate ``eta_v`` (default ``lr``).
        noise: output-noise standard deviation ``sigma`` (>= 0).
        weight_decay: ``kappa`` (>= 0); the SGD step gains ``-(eta kappa / N) w_i``.
        batch_size: ``B`` fresh samples averaged per step (time stays ``t = steps/N``; the
            ``eta^2`` terms carry ``1/B``). Needs a model with ``minibatch=True`` unless 1.
        momentum: heavy-ball ``beta`` in ``[0, 1)`` (``u <- beta u - step``, ``w <- w + u``); for
            constant ``beta`` the ``N -> infinity`` drift is that of SGD with learning rates
            ``eta / (1 - beta)`` (docs/optimisers.md).
        optimizer: ``"sgd"`` or ``"adagrad_norm"`` (step ``eta / b_k`` with
            ``b_{k+1}^2 = b_k^2 + |g_k|^2 / N``, ``g_k`` the first-layer gradient; its scalar
            state ``b^2`` joins the ODE; needs a model with ``adagrad=True``).
        adagrad_b0: AdaGrad-Norm's initial ``b_0 > 0``.
        gradient_flow: the gradient-flow limit: time in units of ``eta t``, the ``eta^2``
            (SGD-noise) terms dropped (``B = inf``; needs ``minibatch=True``). The simulator
            runs gradient descent with step ``lr`` on the population loss (docs/optimisers.md).
            Not with ``batch_size``, ``momentum``, ``optimizer`` or a schedule; ``lr > 0``.
    """

    lr: float
    lr_second_layer: float | None = None
    noise: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 1
    momentum: float = 0.0
    optimizer: str = "sgd"
    adagrad_b0: float = 1.0
    gradient_flow: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "batch_size", _positive_int("training.batch_size", self.batch_size)
        )
        beta = _real("training.momentum", self.momentum)
        if not 0.0 <= beta < 1.0:
            raise ConfigError(f"training.momentum must be in [0, 1), got {self.momentum!r}")
        object.__setattr__(self, "momentum", beta)
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"training.optimizer must be one of {', '.join(map(repr, OPTIMIZERS))}, "
                f"got {self.optimizer!r}"
            )
        b0 = _real("training.adagrad_b0", self.adagrad_b0)
        if b0 <= 0:
            raise ConfigError(f"training.adagrad_b0 must be positive, got {self.adagrad_b0!r}")
        object.__setattr__(self, "adagrad_b0", b0)
        _bool("training.gradient_flow", self.gradient_flow)
        if self.gradient_flow and (self.momentum != 0.0 or self.optimizer != "sgd"):
            raise ConfigError(
                "training.gradient_flow cannot be combined with training.momentum or "
                "training.optimizer (gradient flow has neither)"
            )
        object.__setattr__(self, "lr", _real("training.lr", self.lr, nonnegative=True))
        if self.gradient_flow and self.batch_size != 1:
            raise ConfigError(
                f"training.batch_size cannot be combined with training.gradient_flow (gradient "
                f"flow has no mini-batches), got batch_size = {self.batch_size}"
            )
        if self.gradient_flow and self.lr <= 0:
            raise ConfigError(
                f"training.lr must be positive with training.gradient_flow (time is measured in "
                f"lr * t), got {self.lr!r}"
            )
        lr2 = self.lr if self.lr_second_layer is None else self.lr_second_layer
        object.__setattr__(
            self, "lr_second_layer", _real("training.lr_second_layer", lr2, nonnegative=True)
        )
        object.__setattr__(self, "noise", _real("model.noise", self.noise, nonnegative=True))
        object.__setattr__(
            self, "weight_decay", _real("model.weight_decay", self.weight_decay, nonnegative=True)
        )

    def as_args(self) -> dict[str, float]:
        """The parameters of the generated vector field (``eta``, ``eta_v``, ``sigma``,
        ``kappa``) and of the optimiser wrapper (``batch``, ``momentum``, ``adagrad_b0``; see
        :mod:`hildlimits._families.committee.optim`). In gradient flow time is ``eta t``: the
        rates become ``1`` and ``eta_v / eta``, and ``batch = inf``."""
        eta, eta_v, batch = self.lr, self.lr_second_layer, float(self.batch_size)
        if self.gradient_flow:
            eta_v = eta_v / eta if eta > 0 else 0.0
            eta, batch = 1.0, float("inf")
        return {
            "eta": eta,
            "eta_v": eta_v,
            "sigma": self.noise,
            "kappa": self.weight_decay,
            "batch": batch,
            "momentum": self.momentum,
            "adagrad_b0": self.adagrad_b0,
        }

    @property
    def plain(self) -> bool:
        """Plain online SGD (batch 1, no momentum, no adaptive step, not gradient flow)."""
        return (
            self.batch_size == 1
            and self.momentum == 0.0
            and self.optimizer == "sgd"
            and not self.gradient_flow
        )


@dataclass(frozen=True, eq=False)
class Overlaps:
    r"""Order parameters of a committee: ``Q = WW^T/N``, ``R = WW^{*T}/N``, ``T = W^*W^{*T}/N``,
    student second layer ``v`` and teacher second layer ``v_teacher``.

    Validated against ``model`` when built with :meth:`for_model` (shapes, symmetry, and positive
    semi-definiteness of the joint overlap matrix ``[[Q, R], [R^T, T]]``).
    """

    Q: np.ndarray
    R: np.ndarray
    T: np.ndarray
    v: np.ndarray
    v_teacher: np.ndarray
    _checked: bool = field(default=False, repr=False)

    @classmethod
    def for_model(cls, model: Committee, *, Q, R, T, v=None, v_teacher=None) -> Overlaps:
        """Validated overlaps for ``model`` (``v`` and ``v_teacher`` default to ones)."""
        K, M = model.K, model.M
        Q = _matrix("init.Q", Q, (K, K))
        R = _matrix("init.R", R, (K, M))
        T = _matrix("init.T", T, (M, M))
        v = _matrix("init.v", np.ones(K) if v is None else v, (K,))
        vt = _matrix("init.v_teacher", np.ones(M) if v_teacher is None else v_teacher, (M,))
        for name, S in (("init.Q", Q), ("init.T", T)):
            if not np.allclose(S, S.T, rtol=0, atol=1e-12 * max(1.0, np.abs(S).max())):
                raise ConfigError(f"{name} must be symmetric, got {S.tolist()!r}")
        joint = np.block([[Q, R], [R.T, T]])
        eig = np.linalg.eigvalsh((joint + joint.T) / 2)
        scale = max(1.0, float(np.abs(joint).max()))
        if eig.min() < -1e-10 * scale:
            raise ConfigError(
                "the joint overlap matrix [[Q, R], [R^T, T]] must be positive semi-definite "
                f"(overlaps of real vectors), but its smallest eigenvalue is {eig.min():.6g}; "
                f"init.Q={Q.tolist()}, init.R={R.tolist()}, init.T={T.tolist()}"
            )
        if np.any(np.diag(T) <= 0):
            raise ConfigError(f"init.T must have a positive diagonal, got {T.tolist()!r}")
        return cls(Q=Q, R=R, T=T, v=v, v_teacher=vt, _checked=True)

    @property
    def K(self) -> int:
        return self.Q.shape[0]

    @property
    def M(self) -> int:
        return self.T.shape[0]
