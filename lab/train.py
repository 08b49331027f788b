"""train(config) -> summary: one run, start to end, resumable.

Data flow: config -> build_model + build_optimizers (routing) -> loop over batch(seed, step) -> forward, backward,
opt.step(), sphere projection on schedule -> metrics line -> checkpoint -> summary.json.
Rerunning a config resumes from its last checkpoint and ends with the numbers an uninterrupted run gives.

One writer per run: the run directory's lock is held while it trains (a second process on the same run stops at
once with RunLocked). The metrics log always agrees with the state the run continues from, temp files of
interrupted writes are removed, and a checkpoint that is corrupt or does not fit the model is moved aside
(ckpt.pt.corrupt) and the run restarts.

One code version per record: meta.json lists the segments of a run (code version, start step, date), and a
checkpoint written by other code (another commit, or other uncommitted edits) is not resumed: the run starts again
from step 0, saying so in one line. Restart rather than refuse: the record then holds one code version and an
unattended campaign goes on. A checkpoint of another world size is refused (one line): it would change the global
batch under one run id.
"""
from __future__ import annotations

import contextlib
import math
import time
import traceback
from pathlib import Path

import torch
from tqdm.auto import tqdm

from lab import records
from lab.config import Config
from lab.data import load_data
from lab.models import build_model, flops_per_token
from lab.optim import distributed
from lab.optim.schedules import lr_multiplier, muon_momentum, weight_decay_multiplier
from lab.optim.setup import build_optimizers, format_routing
from lab.optim.sphere import max_drift, max_sphere_drift, project_to_sphere

# dense bf16 peak FLOP/s for the MFU estimate; the first name found in the device name wins (H100 PCIe and NVL
# before the SXM default)
PEAK_BF16_FLOPS = {"H100 PCIe": 756e12, "H100 NVL": 835e12, "H100": 989e12, "H200": 989e12, "A100": 312e12}


def resolve_device(config: Config) -> torch.device:
    if config.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"config: device={config.device!r} but CUDA is not available; use device=cpu or auto")
    return torch.device(config.device)


def autocast_ctx(config: Config, device: torch.device):
    """bf16 autocast on CUDA by default; fp32 on CPU by default (bit-reproducible); dtype=bf16 forces it."""
    use_bf16 = config.dtype == "bf16" or (config.dtype == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else contextlib.nullcontext()


@contextlib.contextmanager
def projected_weights(model, enabled: bool):
    """Project the sphere matrices for the duration of the block, then restore them bit for bit: evaluation sees
    the model on the sphere while the training trajectory (lazy projection) is exactly what it would be without."""
    params = [p for _, p, _ in getattr(model, "sphere_params", tuple)()] if enabled else []
    saved = [p.detach().clone() for p in params]
    if params:
        project_to_sphere(model)
    try:
        yield
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)


@torch.no_grad()
def evaluate(model, data, config, device, ctx, rank: int = 0, world: int = 1) -> float:
    """Mean val loss over config.val_batches batches (the same windows at any world size: ranks split the batches),
    on projected weights when projection is lazy."""
    model.eval()
    total = torch.zeros(2, device=device)  # (sum of batch losses, number of batches)
    with projected_weights(model, config.project_every > 1):
        for i in range(rank, config.val_batches, world):
            x, y = (t.to(device) for t in data.val_batch(i))
            with ctx:
                total += torch.stack([model(x, y)[1].float(), torch.ones((), device=device)])
    model.train()
    total = distributed.sum_tensor(total)
    return (total[0] / total[1]).item()


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)


def set_schedules(optimizers, config: Config, step: int) -> dict:
    """Apply lr, momentum and weight-decay schedules for `step`; return what was set (for the metrics line)."""
    lrm = lr_multiplier(step, config.steps, config.warmup_frac, config.warmdown_frac)
    mom = muon_momentum(step, config.momentum_start, config.momentum, config.momentum_warmup)
    wdm = weight_decay_multiplier(step, config.steps)
    row = {}
    for opt in optimizers:
        for g in opt.param_groups:
            g["lr"] = g["initial_lr"] * lrm
            row[f"lr/{g['kind']}"] = g["lr"]
            if "momentum" in g:  # Muon
                g["momentum"] = mom
                g["weight_decay"] = g["initial_wd"] * wdm
                row["momentum"], row["weight_decay"] = mom, g["weight_decay"]
    return row


class WorldSizeMismatch(ValueError):
    """A checkpoint written by another number of processes: resuming it would change the global batch mid-run."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (or _stop_at) during a run; the message says where it stopped and how to go on."""


def recorded(config: Config, world: int = 1) -> dict | None:
    """The final summary this config already has (train returns it without training), else None. No side effects."""
    try:
        s = records.read_summary(Path(config.runs_dir) / config.run_id(world))
    except records.CorruptRecord:
        return None
    return s if s and s["status"] in records.FINAL else None


def _final_summary(run_dir: Path, rank: int = 0, quiet: bool = False) -> dict | None:
    """The summary of a finished or diverged run, else None. An unreadable summary.json is reported (one line) and
    treated as absent: the run resumes from its checkpoint, or retrains. A final run's checkpoint is removed if a
    kill left one (between summary.json and its removal): it is never resumed."""
    try:
        s = records.read_summary(run_dir)
    except records.CorruptRecord as e:
        if rank == 0 and not quiet:
            records.warn(f"{e}: ignoring it, the run resumes from its checkpoint (or starts again)")
        return None
    if not (s and s["status"] in records.FINAL):
        return None
    if rank == 0:
        (Path(run_dir) / "ckpt.pt").unlink(missing_ok=True)
    return s


def _log_gap(rows: list[dict], k: int, path: Path) -> str | None:
    """What is wrong with a log that should hold one row per step before a checkpoint at step k, or None."""
    have = [r["step"] for r in rows if r["step"] < k]
    if have == list(range(k)):
        return None
    missing = sorted(set(range(k)) - set(have))
    if missing:
        return f"{path} lacks the rows of {len(missing)} of the {k} steps before the checkpoint (first: {missing[0]})"
    return f"{path} repeats {len(have) - k} rows of the {k} steps before the checkpoint"


def train(config: Config, progress: bool = True, _stop_at: int | None = None) -> dict:
    """Train one run; return its summary (the content of summary.json). Resumes if a checkpoint exists.

    A finished or diverged run is returned as recorded, never retrained. Another process training the same run
    raises RunLocked before any work. An exception is recorded as status "failed" and re-raised; an interrupt
    (Ctrl-C, a kill) leaves the last checkpoint to resume from. `_stop_at` simulates a kill right after that step.
    """
    rank, world = distributed.setup()
    run_id = config.run_id(world)
    run_dir = Path(config.runs_dir) / run_id
    done = _final_summary(run_dir, rank)
    if done:
        return done
    device = resolve_device(config) if world == 1 else distributed.device(config)
    data = load_data(config, rank=rank, world_size=world)  # refuses T > data, bad shards, before any work
    lock = records.RunLock(run_dir, run_id)
    held = None
    if rank == 0:
        try:
            lock.acquire()
        except records.RunLocked as e:
            held = str(e)
    held = distributed.broadcast_object(held)
    if held:
        raise records.RunLocked(held)
    run = None
    try:
        done = _final_summary(run_dir, rank, quiet=True)  # another process may have finished it before our lock
        if done:
            return done
        if rank == 0:
            for p in records.clean_leftovers(run_dir):
                records.warn(f"removed {p}, the temp file of an interrupted write")
        code = distributed.broadcast_object(records.code_version() if rank == 0 else None)
        run = Run(config, run_id, run_dir, device, data, master=rank == 0, world=world, code=code,
                  progress=progress)
        status, val = run.loop(progress, _stop_at)
        summary = run.finish(status, val)
    except KeyboardInterrupt as e:
        raise Interrupted(_interrupted(run_id, run)) from e
    except WorldSizeMismatch:
        raise  # refused before any work: nothing to record
    except Exception as e:
        e.recorded = _record_failed(e, run, config, run_id, run_dir, rank)  # the CLI says what was recorded
        e.resumes_at = run.saved if run is not None else None  # and where a rerun goes on from
        raise
    finally:
        if run is not None:
            run.close()
        lock.release()
    distributed.barrier()  # every rank returns once rank 0 has written summary.json
    return summary


def _check_state_shapes(optimizers) -> None:
    """Every optimizer state tensor broadcasts to its parameter's shape (momentum and Adam moments: equal; NorMuon's
    second moment: a row or column; step counters: scalars). torch's load_state_dict does not check this, and a
    mismatch would only fail at the first step, on every rerun."""
    for opt in optimizers:
        for p, st in opt.state.items():
            for k, t in st.items():
                if torch.is_tensor(t) and not _broadcasts(t.shape, p.shape):
                    raise ValueError(f"optimizer state {k!r} of shape {tuple(t.shape)} for a parameter of shape "
                                     f"{tuple(p.shape)}")


def _broadcasts(shape, to) -> bool:
    return len(shape) <= len(to) and all(a in (1, b) for a, b in zip(reversed(shape), reversed(to)))


def _interrupted(run_id: str, run: Run | None) -> str:
    if run is None:
        return f"interrupted before training started; rerun to resume (run {run_id})"
    where = f"from its checkpoint at step {run.saved}" if run.saved else "from step 0: no checkpoint yet"
    return f"interrupted at step {run.done}; rerun to resume (run {run_id}, {where})"


def _record_failed(e: Exception, run, config, run_id, run_dir, rank) -> bool | str:
    """Write summary.json saying the run failed with `e` (rank 0): True if it was written, else why it was not."""
    error = f"{type(e).__name__}: {e}\n{''.join(traceback.format_exception(e))}"
    try:
        if run is not None:
            run.finish("failed", None, error=error)
        elif rank == 0:
            records.write_json(run_dir / "summary.json", {
                "run_id": run_id, "status": "failed", "campaign": config.campaign, "steps": 0,
                "final_val_loss": None, "best_val_loss": None, "error": error})
        return True
    except OSError as w:
        return f"{type(w).__name__}: {w}"


class Run:
    """The state of one run between checkpoints: model, optimizers, step, elapsed time, best val loss."""

    def __init__(self, config, run_id, run_dir, device, data, master, world, code, progress=False):
        self.config, self.run_id, self.run_dir, self.device = config, run_id, run_dir, device
        self.data, self.master, self.world, self.rank, self.code = data, master, world, distributed.rank(), code
        self.build()
        self.ckpt_path = run_dir / "ckpt.pt"
        self.start, self.elapsed, self.rows, self.segments = 0, 0.0, None, []
        self.state = {"best_val": math.inf, "first_loss": None, "max_drift": 0.0, "diverged_at": None,
                      "max_geodesic_drift": 0.0}
        if self.ckpt_path.exists():
            self.resume()
        self.segments = [*self.segments, records.segment(code, self.start)]  # this process's stretch of the run
        if master:
            self.write_records(progress)
        self.fwd = torch.compile(self.model) if config.compile else self.model
        self.ctx = autocast_ctx(config, device)
        # matrices moved by geodesic steps: their drift is measured after every step, before any projection
        self.geodesic = [(p, g["sphere_dim"]) for o in self.optimizers for g in o.param_groups if g.get("geodesic")
                         for p in g["params"]]
        self.done = self.saved = self.start  # training steps in the current state; step of the last checkpoint
        self.log = records.MetricsLog(run_dir, self.start, self.rows) if master else None
        self.mirror = records.WandbMirror(config, run_dir, run_id) if master else None

    def build(self) -> None:
        """The model and optimizers at initialization (seeded: every build is the same)."""
        torch.manual_seed(self.config.seed)
        self.model = build_model(self.config).to(self.device)
        optimizers, self.routing = build_optimizers(self.model, self.config)
        self.optimizers = distributed.wrap(optimizers, self.model, self.world)

    def write_records(self, progress: bool) -> None:
        """config, routing and meta (with the segments of the state this run continues from) at the start."""
        d, config = self.run_dir, self.config
        d.mkdir(parents=True, exist_ok=True)
        records.write_json(d / "config.json", config.to_dict())
        records.atomic_write(d / "routing.md", format_routing(self.routing) + "\n")
        records.write_json(d / "routing.json", self.routing)
        meta = records.run_meta(self.device, self.world, self.code)
        records.write_json(d / "meta.json", {"run_id": self.run_id, **meta, "segments": self.segments})
        if progress:
            resumed = f" (resumed at step {self.start})" if self.start else ""
            print(f"[lab] run {self.run_id}: {config.model} / {config.optimizer} for {config.steps} steps on "
                  f"{self.device}{resumed} -> {d}")

    def resume(self) -> None:
        """Continue from the checkpoint (loaded on the CPU; load_state_dict moves tensors to the run's device), or
        say in one line why the run starts again from step 0: an unreadable checkpoint or one that does not fit the
        model is moved aside to ckpt.pt.corrupt, one of other code is dropped, a log with a gap is restarted.
        A checkpoint of another world size raises WorldSizeMismatch."""
        ck = self._readable_checkpoint()
        if ck is None:
            return
        if ck.get("world", 1) != self.world:
            w = ck.get("world", 1)
            raise WorldSizeMismatch(f"{self.ckpt_path}: written by {w} process(es), this run has {self.world}: "
                                    "not resumed at another world size (the global batch would change under one "
                                    "run id); remove it to train this run from step 0")
        why = distributed.broadcast_object(self._restart_reason(ck) if self.master else None)
        if why:
            if self.master:
                records.warn(f"{why}: the run starts again from step 0")
            return
        err = self._load(ck)
        if err:
            self._set_aside(err)
            return
        torch.set_rng_state(ck["rng"].cpu())  # set_rng_state takes only a CPU ByteTensor
        self.start, self.elapsed, self.state, self.segments = ck["step"], ck["elapsed"], ck["state"], ck["segments"]

    def _readable_checkpoint(self) -> dict | None:
        """The checkpoint if every rank can read it and it is a run checkpoint; else it is moved aside (None)."""
        try:
            ck, err = records.load_checkpoint(self.ckpt_path), None
            err = self._not_ours(ck)
        except records.CorruptRecord as e:
            ck, err = None, str(e)
        if not distributed.all_true(err is None):
            self._set_aside(err or f"a rank could not read {self.ckpt_path}")
            return None
        return ck

    def _set_aside(self, err: str) -> None:
        if self.master:
            self.ckpt_path.replace(self.ckpt_path.with_name("ckpt.pt.corrupt"))
            records.warn(f"{err}: moved to ckpt.pt.corrupt, the run starts again from step 0")

    def _restart_reason(self, ck: dict) -> str | None:
        """Rank 0: why this readable checkpoint must not be resumed, or None. Other code wrote it (one code version
        per record: the checkpoint is removed, so that reverting the code later cannot resume it over this code's
        log), or the log lacks rows before it (resuming over a gap or duplicates would leave records that lie)."""
        old = (ck.get("segments") or [None])[-1]
        if not records.same_code(old, self.code):
            self.ckpt_path.unlink()
            return (f"{self.ckpt_path}: written by code {records.describe_code(old)}, this is code "
                    f"{records.describe_code(self.code)} (one code version per record)")
        self.rows = records.read_metrics(self.run_dir)
        return _log_gap(self.rows, ck["step"], self.run_dir / "metrics.jsonl")

    def _load(self, ck: dict) -> str | None:
        """Load the checkpoint's weights and optimizer states; why they do not fit this run (the model and
        optimizers then start again from their initialization), or None."""
        try:
            self.model.load_state_dict(ck["model"])
            for opt, sd in zip(self.optimizers, ck["optimizers"]):
                opt.load_state_dict(sd)
            _check_state_shapes(self.optimizers)
            err = None
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as e:
            err = f"{self.ckpt_path}: does not fit the model ({type(e).__name__}: {' '.join(str(e).split())[:300]})"
        if distributed.all_true(err is None):
            return None
        self.build()  # a failed load_state_dict may have copied part of the state
        return err or f"{self.ckpt_path}: does not fit the model on another rank"

    def _not_ours(self, ck) -> str | None:
        """Why a checkpoint that torch could read is not one this run can resume from, or None."""
        keys = {"model", "optimizers", "step", "elapsed", "state", "rng"}
        missing = sorted(keys - set(ck)) if isinstance(ck, dict) else sorted(keys)
        if missing:
            return f"{self.ckpt_path}: not a run checkpoint (no {', '.join(missing)})"
        if not (isinstance(ck["step"], int) and 0 < ck["step"] < self.config.steps):
            return f"{self.ckpt_path}: checkpoint step {ck['step']!r} outside 1..{self.config.steps - 1}"
        if len(ck["optimizers"]) != len(self.optimizers):
            return f"{self.ckpt_path}: {len(ck['optimizers'])} optimizer states for {len(self.optimizers)} optimizers"
        return None

    def checkpoint(self, step: int) -> None:
        """Called on every rank (gathering sharded optimizer state is a collective); rank 0 writes the file."""
        optimizers = [o.state_dict() for o in self.optimizers]  # the 1-process layout at any world size
        if self.master:
            records.save_checkpoint(self.ckpt_path, {
                "model": self.model.state_dict(), "optimizers": optimizers, "step": step, "elapsed": self.elapsed,
                "state": self.state, "rng": torch.get_rng_state(), "world": self.world, "segments": self.segments})
        self.saved = step

    def train_step(self, step: int) -> tuple[float, float]:
        """Forward/backward over grad_accum micro-batches, one optimizer step. Returns (loss, grad_norm)."""
        cfg, model = self.config, self.model
        loss = torch.zeros((), device=self.device)
        for micro in range(cfg.grad_accum):
            x, y = (t.to(self.device) for t in self.data.train_batch(step, micro))  # (B, T) each
            with self.ctx:
                micro_loss = self.fwd(x, y)[1] / cfg.grad_accum
            micro_loss.backward()
            loss += micro_loss.detach()
        grad_norm = distributed.sync_and_clip(model, self.optimizers, self.world, cfg.grad_clip)
        for opt in self.optimizers:
            opt.step()
        model.zero_grad(set_to_none=True)
        if self.geodesic:
            self.state["max_geodesic_drift"] = max(self.state.get("max_geodesic_drift", 0.0), max_drift(self.geodesic))
        if (step + 1) % cfg.project_every == 0 and hasattr(model, "sphere_params"):  # lazy: after every N-th step
            self.state["max_drift"] = max(self.state["max_drift"], max_sphere_drift(model))
            project_to_sphere(model)
        return distributed.mean_scalar(loss).item(), grad_norm

    def evaluate(self) -> float:
        val = evaluate(self.model, self.data, self.config, self.device, self.ctx, self.rank, self.world)
        self.state["best_val"] = min(self.state["best_val"], val)
        return val

    def loop(self, progress: bool, stop_at: int | None) -> tuple[str, float | None]:
        bar = tqdm(range(self.start, self.config.steps), desc=self.run_id, initial=self.start,
                   total=self.config.steps, disable=not (self.master and progress), leave=False)
        try:
            return self._steps(bar, stop_at)
        finally:
            bar.close()  # the bar's line cleared before any message (Ctrl-C: "interrupted at step N")

    def _steps(self, bar, stop_at: int | None) -> tuple[str, float | None]:
        cfg, state = self.config, self.state
        fpt, peak = flops_per_token(self.model, cfg), peak_flops(self.device)
        for step in bar:
            t_eval = time.perf_counter()
            row = {"step": step}
            if step % cfg.eval_every == 0:
                row["val_loss"] = self.evaluate()
            t0 = time.perf_counter()
            row |= set_schedules(self.optimizers, cfg, step)
            loss, grad_norm = self.train_step(step)
            self.done = step + 1
            dt = time.perf_counter() - t0  # training time only: tokens/s excludes evaluation
            self.elapsed += time.perf_counter() - t_eval
            tps = cfg.tokens_per_step * self.world / dt
            row |= {"train_loss": loss, "grad_norm": grad_norm, "tokens_per_s": tps, "elapsed_s": self.elapsed}
            if peak:
                row["mfu"] = fpt * tps / (peak * self.world)
            state["first_loss"] = state["first_loss"] or loss
            self.emit(row)
            if not math.isfinite(loss) or loss > cfg.diverge_factor * state["first_loss"]:
                state["diverged_at"] = step  # a non-finite loss, or one far above its start
                return "diverged", None
            if cfg.ckpt_every and (step + 1) % cfg.ckpt_every == 0 and step + 1 < cfg.steps:
                self.checkpoint(step + 1)
            if stop_at is not None and step == stop_at:
                raise KeyboardInterrupt(f"simulated kill after step {step}")
        val = self.evaluate()
        self.emit({"step": cfg.steps, "val_loss": val, "elapsed_s": self.elapsed})
        return "finished", val

    def emit(self, row: dict) -> None:
        if self.master:
            self.log.log(row)
            self.mirror.log(row)

    def close(self) -> None:
        if self.master:
            self.log.close()
            self.mirror.finish()

    def finish(self, status: str, val: float | None, error: str | None = None) -> dict:
        """Write summary.json (rank 0) and drop the checkpoint of a run that will never resume. `steps` is the
        number of training steps of the final state (a diverged run counts the step that diverged)."""
        if self.master:
            self.log.f.flush()
        rows = records.read_metrics(self.run_dir)
        tps = [r["tokens_per_s"] for r in rows if "tokens_per_s" in r][1:]  # step 0 includes warm-up
        losses = [r["train_loss"] for r in rows if "train_loss" in r]
        s = self.state
        summary = {"run_id": self.run_id, "status": status, "campaign": self.config.campaign, "steps": self.done,
                   "final_val_loss": val, "best_val_loss": s["best_val"] if math.isfinite(s["best_val"]) else None,
                   "final_train_loss": losses[-1] if losses else None, "diverged_at": s["diverged_at"],
                   "wall_time_s": self.elapsed, "tokens_per_s": sum(tps) / len(tps) if tps else None,
                   "max_sphere_drift": s["max_drift"],
                   "max_geodesic_drift": s.get("max_geodesic_drift", 0.0) if self.geodesic else None, "error": error}
        if self.master:
            records.write_json(self.run_dir / "summary.json", summary)
            records.fault("summary_written")  # tests: summary.json in place, the checkpoint not yet removed
            if status in records.FINAL:
                self.ckpt_path.unlink(missing_ok=True)
        return summary
