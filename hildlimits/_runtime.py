"""Run-time support for generated vector fields: index grids over units.

A template term such as ``sum_{j,l} v_i v_k v_j v_l E[g'(l_i) g'(l_k) g(l_j) g(l_l)]`` is evaluated
on a broadcast grid with one axis per unit index, so the same generated code serves every ``K`` and
``M``. A pair of indices under which the term is symmetric shares one axis that enumerates
``a <= b`` only (with weight 2 off the diagonal for summed pairs, mirrored for free pairs).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np


def overlap_matrix(Q, R, T):
    """Covariance of the local fields ``(lambda_1..lambda_K, nu_1..nu_M)``: ``[[Q, R], [R^T, T]]``."""
    return jnp.block([[Q, R], [R.T, T]])


class Grid:
    """Broadcast index grid of one term.

    Args:
        K, M: numbers of student and teacher units (static).
        free: ``(name, kind)`` of the output indices, in output order; kind ``"S"`` or ``"T"``.
        dummies: ``(name, kind)`` of the summed indices.
        pairs: pairs of names (both free or both summed, same kind) enumerated as ``a <= b``.
    """

    def __init__(
        self,
        K: int,
        M: int,
        free: Sequence[tuple[str, str]],
        dummies: Sequence[tuple[str, str]],
        pairs: Sequence[tuple[str, str]] = (),
    ):
        size = {"S": K, "T": M}
        offset = {"S": 0, "T": K}
        kinds = dict(free) | dict(dummies)
        partner = {a: b for a, b in pairs}
        second = {b for _, b in pairs}
        order = [name for name, _ in free] + [name for name, _ in dummies]
        axes: list[tuple[str, ...]] = [
            (name, partner[name]) if name in partner else (name,)
            for name in order
            if name not in second
        ]
        self.ndim = len(axes)
        self.kind = kinds
        self.offset = {name: offset[kinds[name]] for name in order}
        self.idx: dict[str, np.ndarray] = {}
        self.shape: list[int] = []
        self.axis: dict[str, int] = {}
        self._weights: list[tuple[int, np.ndarray]] = []
        for ax, names in enumerate(axes):
            n = size[kinds[names[0]]]
            if len(names) == 2:
                a, b = np.triu_indices(n)
                arrays = {names[0]: a, names[1]: b}
                if names[0] not in dict(free):
                    self._weights.append((ax, np.where(a == b, 1.0, 2.0)))
            else:
                arrays = {names[0]: np.arange(n)}
            length = len(next(iter(arrays.values())))
            for name, arr in arrays.items():
                shape = [1] * self.ndim
                shape[ax] = length
                self.idx[name] = arr.reshape(shape)
                self.axis[name] = ax
            self.shape.append(length)
        self.paired = {name for pair in pairs for name in pair}
        self.free = [name for name, _ in free]
        self.free_pair = next(((a, b) for a, b in pairs if a in self.free), None)
        self.free_size = [size[kinds[name]] for name in self.free]
        self.dummy_axes = tuple(sorted({self.axis[name] for name, _ in dummies}))

    def _place(self, block, a: str, b: str):
        """Put a ``(n_a, n_b)`` block (``a``, ``b`` on unpaired axes) onto the grid."""
        shape = [1] * self.ndim
        if a == b:
            shape[self.axis[a]] = self.shape[self.axis[a]]
            return jnp.diagonal(block).reshape(shape)
        shape[self.axis[a]] = block.shape[0]
        shape[self.axis[b]] = block.shape[1]
        if self.axis[a] > self.axis[b]:
            block = block.T
        return block.reshape(shape)

    def cov(self, omega, a: str, b: str):
        """Covariance of the fields of indices ``a`` and ``b`` on the grid."""
        if a not in self.paired and b not in self.paired:
            # static slices instead of gathers (much cheaper, notably under vmap)
            oa, ob = self.offset[a], self.offset[b]
            na, nb = self.shape[self.axis[a]], self.shape[self.axis[b]]
            return self._place(omega[oa : oa + na, ob : ob + nb], a, b)
        return omega[self.offset[a] + self.idx[a], self.offset[b] + self.idx[b]]

    def param(self, array, *names: str):
        """``array[names...]`` on the grid (e.g. ``v_j`` or ``Q_ik``)."""
        if not any(n in self.paired for n in names):
            if len(names) == 1:
                shape = [1] * self.ndim
                shape[self.axis[names[0]]] = array.shape[0]
                return array.reshape(shape)
            if len(names) == 2:
                return self._place(array, *names)
        return array[tuple(self.idx[name] for name in names)]

    def delta(self, a: str, b: str):
        return (self.idx[a] == self.idx[b]).astype(float)

    def reduce(self, values):
        """Sum ``values`` over the summed indices; returns an array over the free indices."""
        values = jnp.broadcast_to(values, tuple(self.shape))
        for ax, w in self._weights:
            shape = [1] * self.ndim
            shape[ax] = len(w)
            values = values * w.reshape(shape)
        if self.dummy_axes:
            values = values.sum(axis=self.dummy_axes)
        if self.free_pair is None:
            return values.reshape(self.free_size)
        a, b = self.free_pair
        ia, ib = self.idx[a].ravel(), self.idx[b].ravel()
        n = self.free_size[0]
        out = jnp.zeros((n, n), values.dtype)
        return out.at[ia, ib].set(values).at[ib, ia].set(values)
