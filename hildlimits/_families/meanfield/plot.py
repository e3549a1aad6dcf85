"""Figures of the mean-field family."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hildlimits._pipeline.plot import _pyplot


def plot_meanfield(traj, path: str | Path, *, sims=(), title: str = "", n_panels: int = 4) -> Path:
    """Mean-field plots: the risk (ODE, and simulations ± one seed std if given), and the particle
    cloud ``a_j`` against the teacher overlap ``r_j1`` at ``n_panels`` times (ODE particles in grey,
    the units of the first seed of the widest simulation overlaid in colour)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 1 + n_panels, figsize=(4.2 * (1 + n_panels), 4.0))
    ax = axes[0]
    ax.plot(traj.t, traj.risk, "k--", lw=2, label=f"mean-field ODE ({traj.r.shape[1]} particles)")
    colors = plt.cm.viridis(np.linspace(0.1, 0.85, max(1, len(sims))))
    for sim, c in zip(sims, colors, strict=False):
        m, s = sim.risk_mean, sim.risk_std
        ax.plot(sim.t, m, color=c, lw=1.3, label=f"width p={sim.width}, d={sim.d}, η={sim.lr:g}")
        ax.fill_between(sim.t, m - s, m + s, color=c, alpha=0.25, lw=0)
    ax.set_yscale("log")
    ax.set_xlabel("τ = η·steps/d")
    ax.set_ylabel("risk  ½E[(ŷ − f*)²]")
    ax.set_title(title or "risk")
    ax.legend(fontsize=7)
    idx = np.unique(np.linspace(0, len(traj.t) - 1, n_panels).round().astype(int))
    wide = max(sims, key=lambda s: s.width) if sims else None
    for ax, i in zip(axes[1:], idx, strict=False):
        ax.scatter(traj.r[i, :, 0], traj.a[i], s=2, color="0.6", alpha=0.5, label="ODE particles")
        if wide is not None:
            j = int(np.argmin(np.abs(wide.t - traj.t[i])))
            ax.scatter(
                wide.r[0, j, :, 0], wide.a[0, j], s=6, color="C3", label=f"units, p={wide.width}"
            )
        ax.set_xlabel("r_j1 (teacher overlap)")
        ax.set_ylabel("a_j")
        ax.set_title(f"τ = {traj.t[i]:.3g}")
        ax.legend(fontsize=7, loc="best")
        # few, short tick labels: long ones (e.g. 0.000125 at tau = 0) ran into each other
        ax.locator_params(axis="both", nbins=4)
        ax.ticklabel_format(axis="both", style="sci", scilimits=(-2, 3), useMathText=True)
        ax.tick_params(labelsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
