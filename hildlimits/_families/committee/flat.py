"""Flat coordinates of the ODE state, for root-finding, Jacobians and eigen-analysis.

``x = (Q[i <= k], R[i, n], v[i])`` lists the independent entries only (``Q`` is symmetric; ``v``
only when the second layer is trained), so ``jax.jacfwd`` of :meth:`FlatState.field` is the
Jacobian of the flow on the space where it really lives.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jax.numpy as jnp
import numpy as np


@dataclass(frozen=True)
class FlatState:
    """Packing of a ``(Q, R[, v])`` state of ``K`` student and ``M`` teacher units.

    Example:
        >>> fs = FlatState(K=2, M=1)
        >>> fs.pack(np.eye(2), np.ones((2, 1))).tolist()
        [1.0, 0.0, 1.0, 1.0, 1.0]
    """

    K: int
    M: int
    trained: bool = False
    iu: tuple = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "iu", np.triu_indices(self.K))

    @property
    def nq(self) -> int:
        """Number of independent entries of ``Q`` (``x[:nq]``)."""
        return len(self.iu[0])

    @property
    def size(self) -> int:
        return self.nq + self.K * self.M + (self.K if self.trained else 0)

    def pack(self, Q, R, v=None) -> np.ndarray:
        parts = [np.asarray(Q)[self.iu], np.asarray(R).ravel()]
        if self.trained:
            parts.append(np.asarray(v))
        return np.concatenate(parts)

    def unpack(self, x) -> dict:
        """The state dict of the generated vector field (JAX arrays, traceable)."""
        K, nq, nr = self.K, self.nq, self.K * self.M
        Q = jnp.zeros((K, K), x.dtype).at[self.iu].set(x[:nq])
        y = {"Q": Q + jnp.triu(Q, 1).T, "R": x[nq : nq + nr].reshape(K, self.M)}
        if self.trained:
            y["v"] = x[nq + nr :]
        return y

    def pack_rate(self, d: dict):
        """Flatten a right-hand side ``{"Q": dQ, "R": dR[, "v": dv]}`` (traceable)."""
        parts = [d["Q"][self.iu], d["R"].ravel()]
        if self.trained:
            parts.append(d["v"])
        return jnp.concatenate(parts)

    def field(self, system, x, args, t=0.0):
        """``d x / dt`` of the generated vector field of ``system`` (jit it for speed)."""
        return self.pack_rate(system.module.vector_field(t, self.unpack(x), args))
