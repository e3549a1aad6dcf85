"""Figures of the least-squares family."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hildlimits._pipeline.plot import _pyplot


def _time_label(method: str) -> str:
    return "t = η·steps" if method == "full_batch" else "t (gradient flow)"


def plot_solve(traj, path, *, title: str = "") -> Path:
    """Risk and training loss over time (early-stopping time marked), and the double-descent
    curve over alpha (at t1 and t -> oo)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ax = axes[0]
    t = np.where(traj.t > 0, traj.t, np.nan)
    ax.plot(t, traj.risk, "C0", lw=2, label="risk ½E[(ŷ − f*)²]")
    ax.plot(t, traj.train_loss, "C1", lw=2, label="training loss")
    es = traj.early_stopping
    if es is not None and not es["at_end"] and es["t"] > 0:
        ax.axvline(es["t"], color="k", ls=":", label=f"early stopping t={es['t']:.3g}")
    if traj.converged is not None and np.isfinite(traj.converged["risk"]):
        ax.axhline(traj.converged["risk"], color="C0", ls="--", lw=1, label="risk, t → ∞")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(_time_label(traj.method))
    ax.set_title(title or "least squares")
    ax.legend(fontsize=8)
    ax = axes[1]
    dd = traj.double_descent
    if dd is not None:
        a = np.asarray(dd["samples"])

        def arr(x):  # (a training loss of 0, interpolation, is left out of the log axis)
            v = np.array([np.nan if v is None else v for v in x], float)
            return np.where(v > 1e-12 * np.nanmax(np.abs(v), initial=1e-300), v, np.nan)

        ax.plot(a, arr(dd["risk_t1"]), "C0", lw=2, label=f"risk at t1 = {dd['t1']:.3g}")
        ax.plot(a, arr(dd["risk_converged"]), "C0--", lw=1.5, label="risk, t → ∞")
        ax.plot(a, arr(dd["train_loss_converged"]), "C1--", lw=1.5, label="training loss, t → ∞")
        ax.axvline(traj.samples, color="0.6", lw=1, label=f"this run, α={traj.samples:g}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("α = n/N")
        ax.set_title("double descent")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_validation(artefacts, outdir: Path, *, cfg) -> list:
    """Theory dashed over simulation mean ± one seed std (risk and training loss) per N, the
    residual in standard errors, and the deviation against N."""
    sims, odes = artefacts
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    colors = plt.cm.viridis(np.linspace(0.1, 0.85, max(1, len(sims))))
    for sim, ode, c in zip(sims, odes, colors, strict=True):
        t = np.where(sim.t > 0, sim.t, np.nan)
        for mean, std, label in (
            (sim.risk_mean, sim.risk_std, "risk"),
            (sim.train_mean, sim.train_loss.std(axis=0), "train"),
        ):
            axes[0].plot(t, mean, color=c, lw=1.2, label=f"{label}, N={sim.N}")
            axes[0].fill_between(t, mean - std, mean + std, color=c, alpha=0.2, lw=0)
        se = np.where(sim.risk_sem > 0, sim.risk_sem, np.nan)
        axes[1].plot(t, (sim.risk_mean - ode.risk) / se, color=c, label=f"risk, N={sim.N}")
        axes[1].plot(
            t,
            (sim.train_mean - ode.train_loss) / np.where(sim.train_sem > 0, sim.train_sem, np.nan),
            color=c,
            ls=":",
            label=f"train, N={sim.N}",
        )
    ode = odes[-1]
    axes[0].plot(np.where(ode.t > 0, ode.t, np.nan), ode.risk, "k--", lw=2, label="theory (N → ∞)")
    axes[0].plot(np.where(ode.t > 0, ode.t, np.nan), ode.train_loss, "k:", lw=2)
    axes[0].set_xscale("log")
    axes[0].set_yscale("log")
    axes[0].set_xlabel(_time_label(ode.method))
    axes[0].legend(fontsize=7)
    axes[1].axhline(0, color="k", lw=0.8)
    for z in (-3, 3):
        axes[1].axhline(z, color="0.6", ls="--", lw=0.8)
    axes[1].set_xscale("log")
    axes[1].set_xlabel(_time_label(ode.method))
    axes[1].set_ylabel("(simulation − theory) / standard error")
    axes[1].legend(fontsize=7)
    Ns = [s.N for s in sims]
    dev = [float(np.abs(s.risk_mean - o.risk).max()) for s, o in zip(sims, odes, strict=True)]
    axes[2].loglog(Ns, dev, "o-", label="max_t |risk_sim − theory|")
    axes[2].loglog(Ns, [dev[0] * Ns[0] / n for n in Ns], "k:", label="∝ 1/N")
    axes[2].set_xlabel("N")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    path = Path(outdir) / "least_squares.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [path]
