"""Independent reference: the published closed forms and ODEs, hand-written with loops in NumPy.

Sources: Saad & Solla, PRE 52, 4225 (1995) and PRL 74, 4337 (1995) for I2, I3, I4;
Goldt, Advani, Saxe, Krzakala, Zdeborova, NeurIPS 2019 (eqs. for both layers, noise), for
g(x) = erf(x / sqrt(2)). Nothing here is generated or shared with the library.
"""

from __future__ import annotations

import numpy as np
from scipy.integrate import solve_ivp

# ----------------------------------------------------------------------------- erf integrals


def I2_erf(C):
    """E[g(z1) g(z2)]."""
    return 2 / np.pi * np.arcsin(C[0, 1] / np.sqrt((1 + C[0, 0]) * (1 + C[1, 1])))


def I3_erf(C):
    """E[g'(z1) z2 g(z3)]."""
    lam3 = (1 + C[0, 0]) * (1 + C[2, 2]) - C[0, 2] ** 2
    return 2 / np.pi / np.sqrt(lam3) * (C[1, 2] * (1 + C[0, 0]) - C[0, 1] * C[0, 2]) / (1 + C[0, 0])


def I4_erf(C):
    """E[g'(z1) g'(z2) g(z3) g(z4)]."""
    c = C
    lam4 = (1 + c[0, 0]) * (1 + c[1, 1]) - c[0, 1] ** 2
    lam0 = (
        lam4 * c[2, 3]
        - c[1, 2] * c[1, 3] * (1 + c[0, 0])
        - c[0, 2] * c[0, 3] * (1 + c[1, 1])
        + c[0, 1] * c[0, 2] * c[1, 3]
        + c[0, 1] * c[0, 3] * c[1, 2]
    )
    lam1 = (
        lam4 * (1 + c[2, 2])
        - c[1, 2] ** 2 * (1 + c[0, 0])
        - c[0, 2] ** 2 * (1 + c[1, 1])
        + 2 * c[0, 1] * c[0, 2] * c[1, 2]
    )
    lam2 = (
        lam4 * (1 + c[3, 3])
        - c[1, 3] ** 2 * (1 + c[0, 0])
        - c[0, 3] ** 2 * (1 + c[1, 1])
        + 2 * c[0, 1] * c[0, 3] * c[1, 3]
    )
    return 4 / np.pi**2 / np.sqrt(lam4) * np.arcsin(lam0 / np.sqrt(lam1 * lam2))


def J2_erf(C):
    """E[g'(z1) g'(z2)]."""
    return 2 / np.pi / np.sqrt(1 + C[0, 0] + C[1, 1] + C[0, 0] * C[1, 1] - C[0, 1] ** 2)


# linear activation g(x) = x: Wick
def I2_lin(C):
    return C[0, 1]


def I3_lin(C):
    return C[1, 2]


def I4_lin(C):
    return C[2, 3]


def J2_lin(C):
    return 1.0


INTEGRALS = {"erf": (I2_erf, I3_erf, I4_erf, J2_erf), "linear": (I2_lin, I3_lin, I4_lin, J2_lin)}

# ----------------------------------------------------------------------------- ODE (Goldt et al.)


def _sub(Om, idx):
    return Om[np.ix_(idx, idx)]


def reference_rhs(Q, R, T, v, vs, *, eta, eta_v, sigma, kappa, train_v, act="erf"):
    """Right-hand side (dQ, dR, dv) for student = teacher activation ``act``."""
    I2, I3, I4, J2 = INTEGRALS[act]
    K, M = R.shape
    Om = np.block([[Q, R], [R.T, T]])
    S = list(range(K))
    Tt = [K + n for n in range(M)]
    dR = np.zeros((K, M))
    dQ = np.zeros((K, K))
    dv = np.zeros(K)
    for i in range(K):
        for n in range(M):
            acc = sum(vs[m] * I3(_sub(Om, [i, Tt[n], Tt[m]])) for m in range(M))
            acc -= sum(v[j] * I3(_sub(Om, [i, Tt[n], S[j]])) for j in range(K))
            dR[i, n] = eta * v[i] * acc - eta * kappa * R[i, n]
    for i in range(K):
        for k in range(K):
            a = v[i] * (
                sum(vs[m] * I3(_sub(Om, [i, k, Tt[m]])) for m in range(M))
                - sum(v[j] * I3(_sub(Om, [i, k, j])) for j in range(K))
            )
            b = v[k] * (
                sum(vs[m] * I3(_sub(Om, [k, i, Tt[m]])) for m in range(M))
                - sum(v[j] * I3(_sub(Om, [k, i, j])) for j in range(K))
            )
            quad = sum(
                vs[n] * vs[m] * I4(_sub(Om, [i, k, Tt[n], Tt[m]]))
                for n in range(M)
                for m in range(M)
            )
            quad -= 2 * sum(
                v[j] * vs[n] * I4(_sub(Om, [i, k, j, Tt[n]])) for j in range(K) for n in range(M)
            )
            quad += sum(
                v[j] * v[l] * I4(_sub(Om, [i, k, j, l])) for j in range(K) for l in range(K)
            )
            quad += sigma**2 * J2(_sub(Om, [i, k]))
            dQ[i, k] = eta * (a + b) + eta**2 * v[i] * v[k] * quad - 2 * eta * kappa * Q[i, k]
    if train_v:
        for i in range(K):
            dv[i] = eta_v * (
                sum(vs[n] * I2(_sub(Om, [i, Tt[n]])) for n in range(M))
                - sum(v[j] * I2(_sub(Om, [i, j])) for j in range(K))
            )
    return dQ, dR, dv


def reference_risk(Q, R, T, v, vs, act="erf"):
    I2 = INTEGRALS[act][0]
    K, M = R.shape
    Om = np.block([[Q, R], [R.T, T]])
    e = 0.5 * sum(v[i] * v[k] * I2(_sub(Om, [i, k])) for i in range(K) for k in range(K))
    e += 0.5 * sum(vs[n] * vs[m] * I2(_sub(Om, [K + n, K + m])) for n in range(M) for m in range(M))
    e -= sum(v[i] * vs[n] * I2(_sub(Om, [i, K + n])) for i in range(K) for n in range(M))
    return e


def reference_solve(
    Q0, R0, T, v0, vs, *, ts, eta, eta_v, sigma, kappa, train_v, act="erf", rtol=1e-13, atol=1e-14
):
    """Integrate :func:`reference_rhs` with scipy's DOP853; returns (risk(ts), states)."""
    K, M = R0.shape

    def unpack(y):
        Q = y[: K * K].reshape(K, K)
        R = y[K * K : K * K + K * M].reshape(K, M)
        v = y[K * K + K * M :] if train_v else v0
        return Q, R, v

    def f(t, y):
        Q, R, v = unpack(y)
        dQ, dR, dv = reference_rhs(
            Q, R, T, v, vs, eta=eta, eta_v=eta_v, sigma=sigma, kappa=kappa, train_v=train_v, act=act
        )
        return np.concatenate([dQ.ravel(), dR.ravel()] + ([dv] if train_v else []))

    y0 = np.concatenate([Q0.ravel(), R0.ravel()] + ([v0] if train_v else []))
    sol = solve_ivp(f, (ts[0], ts[-1]), y0, method="DOP853", t_eval=ts, rtol=rtol, atol=atol)
    assert sol.success, sol.message
    states = [unpack(y) for y in sol.y.T]
    risk = np.array([reference_risk(Q, R, T, v, vs, act) for Q, R, v in states])
    return risk, states
