"""Figures of the committee family."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hildlimits._pipeline.plot import _pyplot


def plot_trajectory(traj, path: str | Path, *, title: str = "", log_time: bool = True) -> Path:
    """Risk (log-log where natural) and order parameters ``R``, ``Q`` over time, written to ``path``."""
    plt = _pyplot()
    t = traj.t
    sel = t > 0 if log_time else np.ones_like(t, bool)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    risk = traj.risk[sel]
    positive = risk[risk > 0]
    if positive.size and positive.max() > 100 * positive.min():  # spans decades: log axis
        ax.plot(t[sel], np.maximum(risk, positive.min()), color="k", lw=2, label="ODE")
        ax.set_yscale("log")
    else:
        ax.plot(t[sel], risk, color="k", lw=2, label="ODE")
    ax.set_xscale("log" if log_time else "linear")
    ax.set_xlabel("t = steps / N")
    ax.set_ylabel("risk  ½E[(ŷ − f*)²]")
    ax.set_title(title or "generalisation error")
    if traj.status != "ok":
        ax.axvline(traj.t_stop, color="r", ls=":", label=traj.status)
    ax.legend()
    K, M = traj.R.shape[1:]
    for i in range(K):
        for n in range(M):
            axes[1].plot(
                t[sel], traj.R[sel, i, n], label=f"R{i + 1}{n + 1}" if K * M <= 16 else None
            )
        for k in range(i, K):
            axes[2].plot(t[sel], traj.Q[sel, i, k], label=f"Q{i + 1}{k + 1}" if K <= 4 else None)
    for ax, name in (
        (axes[1], "R (student-teacher overlaps)"),
        (axes[2], "Q (student-student overlaps)"),
    ):
        ax.set_xscale("log" if log_time else "linear")
        ax.set_xlabel("t = steps / N")
        ax.set_title(name)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
