r"""Hyper-parameter sweeps: a Cartesian grid of configurations solved in batches.

Each batch is one ``jit(vmap(solve))`` call. Under ``vmap`` each point keeps its own step size and
its own status: a diverging point stops (status ``"diverged at t=..."``) while the others finish.
Finished batches are written to a partial file so that an interrupted sweep resumes.

Devices (``spread``):

* ``"batches"`` (default): whole batches go to the local devices, one worker thread per device
  pulling the next batch from a shared queue. Each device runs its own adaptive loop, so a batch
  never waits for another device's slowest point (no per-step synchronisation).
* ``"mesh"``: every batch is split over all local devices with a ``jax.sharding`` mesh (one axis
  over the batch); one SPMD program whose ``while`` loop runs until the slowest point of the whole
  batch finishes.

On CPU the cores become devices with ``XLA_FLAGS=--xla_force_host_platform_device_count=n`` (the
CLI sets this to the number of cores unless ``XLA_FLAGS`` already names a device count).

Multi-host: with ``distributed=True`` every process calls ``jax.distributed.initialize()`` (which
reads the cluster environment, e.g. SLURM, or ``JAX_COORDINATOR_ADDRESS``/``JAX_NUM_PROCESSES``/
``JAX_PROCESS_ID``), solves the batches ``b`` with ``b % process_count == process_index`` on its
local devices, and writes them to the shared output directory; process 0 merges them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import math
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from hildlimits._errors import ConfigError
from hildlimits._families import DEFAULT_KIND, config_for, get_family
from hildlimits._pipeline import runner as _runner
from hildlimits._pipeline.io import write_json
from hildlimits._pipeline.runner import RunStatus, Status, check_solve_options, save_times

SWEEPABLE = tuple(get_family(DEFAULT_KIND).sweepable)
"""The committee's sweep names (each family declares its own: ``Family.sweepable``)."""
SPREADS = ("batches", "mesh")


def default_batch_size() -> int:
    """Points per batch when none is given: 128 on CPU (measured fastest for small committees:
    larger batches fall out of cache, smaller ones pay the per-step overhead), 1024 on
    accelerators."""
    return 128 if jax.default_backend() == "cpu" else 1024


def parse_param(spec: str, family=None) -> tuple[str, list[float]]:
    """``name=a:b:n`` (linear), ``name=log:a:b:n`` (geometric) or ``name=x,y,z`` (list), with
    ``name`` one of ``family.sweepable`` (default: the committee's).

    The committee's ``init.Q``, ``init.R``, ``init.v``, ``init.v_teacher`` are *factors*
    multiplying the configured initial values.
    """
    family = get_family(DEFAULT_KIND) if family is None else family
    sweepable = tuple(family.sweepable)
    if "=" not in spec:
        raise ConfigError(
            f"--param must look like name=a:b:n, name=log:a:b:n or name=x,y,z; got {spec!r}"
        )
    name, values = (x.strip() for x in spec.split("=", 1))
    if name == "solve.t1":
        raise ConfigError("--param solve.t1 cannot be swept (all points share the save times)")
    if name not in sweepable:
        raise ConfigError(
            f"--param name must be one of {', '.join(sweepable)} for model.kind = "
            f"{family.kind!r}; got {name!r}"
        )
    try:
        if values.startswith("log:"):
            a, b, n = values[4:].split(":")
            a, b, n = float(a), float(b), int(n)
        else:
            a = None
    except ValueError:
        raise ConfigError(f"--param {name}: cannot parse values {values!r}") from None
    if a is not None and (a <= 0 or b <= 0):
        raise ConfigError(f"--param {name}: log ranges need positive ends, got {values!r}")
    try:
        if values.startswith("log:"):
            _check_count(name, n, values)
            vals = np.geomspace(a, b, n)
        elif ":" in values:
            a, b, n = values.split(":")
            _check_count(name, int(n), values)
            vals = np.linspace(float(a), float(b), int(n))
        else:
            vals = np.array([float(x) for x in values.split(",")])
    except ValueError:
        raise ConfigError(f"--param {name}: cannot parse values {values!r}") from None
    if len(vals) < 1 or not np.all(np.isfinite(vals)):
        raise ConfigError(f"--param {name}: needs at least one finite value, got {values!r}")
    return name, [float(v) for v in vals]


MAX_VALUES = 10_000_000
"""Values one ``--param`` may list (a grid is limited by its estimated memory as well)."""


def _check_count(name: str, n: int, values: str) -> None:
    if n < 1:
        raise ConfigError(f"--param {name}: the number of values must be positive, got {values!r}")
    if n > MAX_VALUES:
        raise ConfigError(
            f"--param {name}: {n} values is more than the {MAX_VALUES} one parameter may take "
            f"(got {values!r})"
        )


@dataclass(frozen=True, eq=False)
class SweepResult:
    """Sweep output: ``params`` (name -> values), ``points`` (one dict per grid point, in
    row-major order of ``params``), save times ``t``, ``risk`` (points x times; NaN after a
    point stopped), ``status`` per point, ``final_risk`` (risk at the last reached time)."""

    params: dict
    points: list
    t: np.ndarray
    risk: np.ndarray
    status: list
    final_risk: np.ndarray

    def to_dict(self) -> dict:
        def clean(a):
            return [[None if not math.isfinite(x) else x for x in row] for row in a.tolist()]

        return {
            "params": self.params,
            "points": self.points,
            "t": self.t.tolist(),
            "risk": clean(self.risk),
            "status": self.status,
            "final_risk": [None if not math.isfinite(x) else x for x in self.final_risk.tolist()],
        }


def _sweep_key(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[
        :16
    ]


def sweep(
    system,
    *,
    init=None,
    hyper=None,
    config=None,
    params: dict,
    t1: float | None = None,
    n_save: int = 100,
    spacing: str = "log",
    t_first: float | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    solver: str | None = None,
    max_steps: int | None = None,
    divergence_bound: float | None = None,
    lr_tied: bool = False,
    batch_size: int | None = None,
    shard: bool = True,
    spread: str = "batches",
    store: str | Path | None = None,
    progress: bool | None = None,
    distributed: bool = False,
    force: bool = False,
) -> SweepResult:
    """Solve ``system`` on the Cartesian grid ``params`` (name -> list of values).

    Args:
        system: a derived system of any family.
        config: the family's config (e.g. from :func:`hildlimits.load_config`); or, for the
            committee, ``init`` (:class:`~hildlimits.Overlaps`) and ``hyper``
            (:class:`~hildlimits.Hyperparams`).
        params: ordered mapping from a name in the family's ``sweepable`` to its values.
        lr_tied: (with ``init``/``hyper``) the second-layer rate follows the swept first-layer
            rate (the config did not set it separately).
        batch_size: points per ``jit(vmap(solve))`` call (default :func:`default_batch_size`;
            with ``spread="mesh"`` rounded up to a multiple of the number of devices).
        shard: use all local devices (``False``: the first one only).
        spread: ``"batches"`` (whole batches to devices, in parallel) or ``"mesh"`` (each batch
            split over the devices); see the module docstring.
        store: directory for the partial results of finished batches (resume after an
            interruption; deleted when the sweep completes).
        force: run a grid whose estimated memory exceeds the available memory
            (:mod:`hildlimits._pipeline.limits`) instead of refusing it.
        Other options as in :func:`hildlimits.solve` (default: the config's).
    """
    family, config = config_for(
        system, config, who="sweep", init=init, hyper=hyper, lr_tied=lr_tied
    )
    so = family.solve_options(config)
    given = {"rtol": rtol, "atol": atol, "solver": solver, "max_steps": max_steps}
    given["divergence_bound"] = divergence_bound
    opts = {k: (so[k] if v is None else v) for k, v in given.items()}
    if t1 is None:
        t1 = so["t1"]
    rtol, atol, solver = opts["rtol"], opts["atol"], opts["solver"]
    max_steps, divergence_bound = opts["max_steps"], opts["divergence_bound"]
    if not params:
        raise ConfigError("a sweep needs at least one --param")
    for name in params:
        if name not in family.sweepable:
            raise ConfigError(
                f"sweep parameter must be one of {', '.join(family.sweepable)} for model.kind = "
                f"{family.kind!r}; got {name!r}"
            )
    check_solve_options(
        t1=t1,
        n_save=n_save,
        spacing=spacing,
        t_first=t_first,
        rtol=rtol,
        atol=atol,
        solver=solver,
        max_steps=max_steps,
        divergence_bound=divergence_bound,
        steady_state=None,
    )
    if batch_size is None:
        batch_size = default_batch_size()
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    if spread not in SPREADS:
        raise ConfigError(f"spread must be one of {', '.join(SPREADS)}; got {spread!r}")
    if distributed:
        _initialize_distributed()
    names = list(params)
    from hildlimits._pipeline import limits as _limits

    # the grid's size is known before it is built: refuse one that cannot be kept
    _limits.check([_limits.sweep_needs(_limits.grid_points(params), int(n_save))], force=force)
    points = [
        dict(zip(names, values, strict=True))
        for values in itertools.product(*[params[n] for n in names])
    ]
    ts = save_times(float(t1), int(n_save), spacing, t_first)
    base = dataclasses.replace(
        config, **_solve_replacement(config, family, divergence_bound=divergence_bound)
    )

    def problem(i):
        """The config of point ``i`` (built per batch, not for the whole grid at once), or
        ``(None, reason)`` for a point that is not a valid configuration."""
        try:
            return family.with_values(base, points[i]), None
        except ConfigError as exc:
            return None, str(exc)

    devices = jax.local_devices() if shard else jax.local_devices()[:1]
    nd = len(devices)
    mesh_mode = spread == "mesh" and nd > 1
    bs = int(math.ceil(batch_size / nd) * nd) if mesh_mode else batch_size
    batches = [list(range(i, min(i + bs, len(points)))) for i in range(0, len(points), bs)]
    pid, nproc = (jax.process_index(), jax.process_count()) if distributed else (0, 1)
    mine = [b for b in range(len(batches)) if b % nproc == pid]

    key = _sweep_key(
        {
            "structure": system.structure,
            "config": family.resolved(config),
            "params": params,
            "ts": ts,
            "opts": [rtol, atol, solver, max_steps, divergence_bound, bs],
        }
    )
    store = Path(store) if store is not None else None
    part_path = store / f"sweep.partial-{pid}.json" if store is not None else None
    done: dict[str, dict] = {}
    if part_path is not None and part_path.exists():
        try:
            data = json.loads(part_path.read_text())
            if data.get("key") == key:
                done = data["batches"]
        except (OSError, ValueError, KeyError):
            done = {}

    risk = np.full((len(points), len(ts)), np.nan)
    status = [RunStatus.of(Status.NOT_RUN)] * len(points)
    for b, rows in done.items():
        for j, i in enumerate(batches[int(b)]):
            risk[i] = np.array([np.nan if x is None else x for x in rows["risk"][j]])
            status[i] = RunStatus.parse(rows["status"][j])

    todo = [b for b in mine if str(b) not in done]
    show = (os.isatty(2) if progress is None else progress) and bool(todo)
    bar = None
    if show:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), unit="batch", desc=f"sweep {len(points)} points")
    with jax.enable_x64(True):
        dyn = family.dynamics(system, base)
        run = _runner.compiled_dynamics(dyn, solver=solver, max_steps=max_steps, batched=True)
        tols = (np.float64(rtol), np.float64(atol))
        pad = nd if mesh_mode else 1
        sharding = (
            NamedSharding(Mesh(np.array(devices), ("batch",)), P("batch")) if mesh_mode else None
        )

        def solve_batch(b, device):
            """Solve batch ``b`` (on ``device``, or over the mesh when ``device`` is None)."""
            probs = {i: problem(i) for i in batches[b]}
            bad = {i: why for i, (cfg_i, why) in probs.items() if cfg_i is None}
            valid = [i for i in batches[b] if i not in bad]
            if not valid:
                return valid, None, bad
            ys, argss = zip(
                *[family.initial(system, probs[i][0]) for i in valid],
                strict=True,
            )
            n_pad = (-len(valid)) % pad
            ys = list(ys) + [ys[-1]] * n_pad
            argss = list(argss) + [argss[-1]] * n_pad
            y0 = jax.tree.map(lambda *a: np.stack(a), *ys)
            args = jax.tree.map(lambda *a: np.stack(a), *argss)
            if device is None:
                y0, args = jax.device_put((y0, args), sharding)
                inputs = (y0, args, jnp.asarray(ts), *map(jnp.asarray, tols))
            else:
                inputs = jax.device_put((y0, args, ts, *tols), device)
            return valid, jax.device_get(run(*inputs)), bad

        def finish(b, valid, out, bad):
            for j, i in enumerate(valid):
                o = jax.tree.map(lambda a, j=j: a[j], out)
                r = np.array(o["risk"][:-1], np.float64)
                r[ts > float(o["ts"][-1])] = np.nan
                r[~np.isfinite(r)] = np.nan
                risk[i], status[i] = r, _runner.status_of(o)
            idx = batches[b]
            for i, why in bad.items():
                status[i] = RunStatus.of(Status.INVALID, detail=why)
            done[str(b)] = {
                "risk": [
                    [None if not math.isfinite(x) else x for x in risk[i].tolist()] for i in idx
                ],
                "status": [status[i] for i in idx],
            }
            if part_path is not None:
                write_json(part_path, {"key": key, "batches": done})
            if bar is not None:
                bar.update(1)

        if mesh_mode or nd == 1:
            for b in todo:
                finish(b, *solve_batch(b, None if mesh_mode else devices[0]))
        else:
            with contextlib.closing(_on_devices(todo, devices, solve_batch)) as finished:
                for b, valid, out, bad in finished:
                    finish(b, valid, out, bad)
    if bar is not None:
        bar.close()
    if nproc > 1:
        risk, status = _merge_processes(store, key, batches, risk, status, nproc)
    final = np.array([r[np.isfinite(r)][-1] if np.isfinite(r).any() else np.nan for r in risk])
    if part_path is not None and pid == 0:
        for f in store.glob("sweep.partial-*.json"):
            f.unlink(missing_ok=True)
    return SweepResult(
        params={n: list(map(float, params[n])) for n in names},
        points=points,
        t=ts,
        risk=risk,
        status=status,
        final_risk=final,
    )


def _solve_replacement(config, family, *, divergence_bound) -> dict:
    """The config fields that carry the sweep's divergence bound (the family's solve options)."""
    so = config.solve
    if isinstance(so, dict):
        return {"solve": so | {"divergence_bound": divergence_bound, "steady_state": None}}
    return {"solve": dataclasses.replace(so, divergence_bound=divergence_bound, steady_state=None)}


def _on_devices(todo, devices, solve_batch):
    """Yield ``(b, *solve_batch(b, device))`` for every batch in ``todo`` as they finish, one
    worker thread per device pulling batches from a shared queue (JAX releases the GIL while a
    computation runs). On an exception or interruption the workers take no further batches; the
    ones running finish first."""
    pending: queue.Queue = queue.Queue()
    for b in todo:
        pending.put(b)
    results: queue.Queue = queue.Queue()
    stop = threading.Event()

    def worker(device):
        while not stop.is_set():
            try:
                b = pending.get_nowait()
            except queue.Empty:
                return
            try:
                with jax.enable_x64(True):  # configuration contexts are per thread
                    out = solve_batch(b, device)
                results.put((b, out, None))
            except BaseException as exc:  # re-raised in the calling thread
                results.put((b, None, exc))
                return

    threads = [threading.Thread(target=worker, args=(d,), daemon=True) for d in devices]
    for t in threads:
        t.start()
    try:
        for _ in range(len(todo)):
            b, out, exc = results.get()
            if exc is not None:
                raise exc
            yield (b, *out)
    finally:
        stop.set()
        for t in threads:
            t.join()


def _initialize_distributed() -> None:
    """``jax.distributed.initialize`` from ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and
    ``JAX_PROCESS_ID`` when set, else from the cluster environment (SLURM, ...); idempotent."""
    if jax.distributed.is_initialized():
        return
    env = os.environ
    kwargs = {}
    if "JAX_COORDINATOR_ADDRESS" in env:
        kwargs["coordinator_address"] = env["JAX_COORDINATOR_ADDRESS"]
    if "JAX_NUM_PROCESSES" in env:
        kwargs["num_processes"] = int(env["JAX_NUM_PROCESSES"])
    if "JAX_PROCESS_ID" in env:
        kwargs["process_id"] = int(env["JAX_PROCESS_ID"])
    jax.distributed.initialize(**kwargs)


def _merge_processes(store, key, batches, risk, status, nproc, timeout=3600.0):
    """Process 0 waits for the other processes' partial files and merges them."""
    if store is None:
        raise ConfigError("a distributed sweep needs an output directory shared by all processes")
    if jax.process_index() != 0:
        return risk, status
    deadline = time.monotonic() + timeout
    for p in range(1, nproc):
        path = Path(store) / f"sweep.partial-{p}.json"
        need = {str(b) for b in range(len(batches)) if b % nproc == p}
        while True:
            try:
                data = json.loads(path.read_text())
                if data.get("key") == key and need <= set(data["batches"]):
                    break
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise ConfigError(f"process {p} did not finish its batches within {timeout:.0f} s")
            time.sleep(1.0)
        for b in need:
            rows = data["batches"][b]
            for j, i in enumerate(batches[int(b)]):
                risk[i] = np.array([np.nan if x is None else x for x in rows["risk"][j]])
                status[i] = RunStatus.parse(rows["status"][j])
    return risk, status


def plot_sweep(result: SweepResult, path, *, log_time: bool = True) -> None:
    """One parameter: risk curves and final risk against the parameter. Two or more: heat map
    of the final risk over the first two (the others at their first value), divergence marked."""
    from hildlimits._pipeline.plot import _pyplot

    plt = _pyplot()
    names = list(result.params)
    diverged = np.array([RunStatus.parse(s).diverged for s in result.status])
    if len(names) == 1:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        vals = np.array(result.params[names[0]])
        cmap = plt.cm.viridis(np.linspace(0, 1, len(vals)))
        sel = result.t > 0 if log_time else slice(None)
        for r, c in zip(result.risk, cmap, strict=True):
            axes[0].plot(result.t[sel], r[sel], color=c, lw=1)
        axes[0].set_xscale("log" if log_time else "linear")
        axes[0].set_yscale("log")
        axes[0].set_xlabel("t")
        axes[0].set_ylabel("risk")
        axes[0].set_title(f"risk curves, colour = {names[0]}")
        ok = ~diverged & np.isfinite(result.final_risk)
        axes[1].plot(vals[ok], result.final_risk[ok], "o-", ms=3)
        if diverged.any():
            axes[1].axvspan(
                vals[diverged].min(), vals[diverged].max(), color="r", alpha=0.15, label="diverged"
            )
            axes[1].legend()
        axes[1].set_yscale("log")
        if vals.min() > 0 and vals.max() > 20 * vals.min():
            axes[1].set_xscale("log")
        axes[1].set_xlabel(names[0])
        axes[1].set_ylabel("final risk")
    else:
        a, b = names[:2]
        va, vb = np.array(result.params[a]), np.array(result.params[b])
        rest = int(np.prod([len(result.params[n]) for n in names[2:]])) if len(names) > 2 else 1
        Z = result.final_risk.reshape(len(va), len(vb), rest)[:, :, 0]
        D = diverged.reshape(len(va), len(vb), rest)[:, :, 0]
        fig, ax = plt.subplots(figsize=(7, 5.5))
        Zp = np.where(D | ~np.isfinite(Z), np.nan, Z)
        pos = Zp[np.isfinite(Zp) & (Zp > 0)]
        from matplotlib.colors import LogNorm

        norm = (
            LogNorm(vmin=pos.min(), vmax=pos.max())
            if pos.size and pos.max() > 10 * pos.min()
            else None
        )
        mesh = ax.pcolormesh(vb, va, Zp, shading="nearest", norm=norm, cmap="viridis")
        fig.colorbar(mesh, ax=ax, label="final risk")
        if D.any():
            ax.contourf(vb, va, D.astype(float), levels=[0.5, 1.5], colors="none", hatches=["xx"])
            ax.contour(vb, va, D.astype(float), levels=[0.5], colors="r", linewidths=2)
            ax.plot([], [], color="r", lw=2, label="divergence boundary (hatched: diverged)")
            ax.legend(loc="upper right", fontsize=8)
        ax.set_xlabel(b)
        ax.set_ylabel(a)
        if va.min() > 0 and va.max() > 20 * va.min():
            ax.set_yscale("log")
        if vb.min() > 0 and vb.max() > 20 * vb.min():
            ax.set_xscale("log")
        title = "final risk"
        if len(names) > 2:
            title += " at " + ", ".join(f"{n}={result.params[n][0]:g}" for n in names[2:])
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
