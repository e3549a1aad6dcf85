"""Figures of the deep linear family: mode strengths and risk over time."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hildlimits._pipeline.plot import _pyplot


def plot_deep_linear(traj, path: str | Path, *, sims=(), title: str = "") -> Path:
    """Two panels: the mode strengths ``pi_alpha(t)`` (ODE dashed, teacher singular values
    dotted; simulations as mean ± one seed std bands) and the risk (log scale)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    unit = "τ = η·steps/N" if traj.gradient_flow else "t = steps/N"
    ax = axes[0]
    r = traj.modes.shape[1]
    for a in range(r):
        c = f"C{a % 10}"
        for k, sim in enumerate(sims):
            m, sd = sim.modes_mean[:, a], sim.modes_std[:, a]
            alpha = 0.35 + 0.5 * (k + 1) / len(sims)
            label = f"simulation N={sim.N}" if a == 0 else None
            ax.plot(sim.t, m, color=c, lw=1.2, alpha=alpha, label=label)
            ax.fill_between(sim.t, m - sd, m + sd, color=c, alpha=0.2, lw=0)
        ax.plot(
            traj.t,
            traj.modes[:, a],
            "--",
            color="k" if sims else c,
            lw=1.8,
            label="ODE" if a == 0 else None,
        )
        ax.axhline(traj.teacher[a], color=c, ls=":", lw=1)
    ax.set_xlabel(unit)
    ax.set_ylabel("mode strength π_α = u_αᵀ W_L⋯W_1 v_α")
    ax.set_title(title or "mode strengths")
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.plot(traj.t, traj.risk, "k--", lw=1.8, label="ODE")
    for sim in sims:
        m, sd = sim.risk_mean, sim.risk_std
        ax.plot(sim.t, m, lw=1.2, label=f"simulation N={sim.N}, {sim.seeds} seeds")
        ax.fill_between(sim.t, np.maximum(m - sd, 1e-300), m + sd, alpha=0.2, lw=0)
    ax.set_yscale("log")
    ax.set_xlabel(unit)
    ax.set_ylabel("risk ½‖W_L⋯W_1 − M*‖²_F")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
