"""Executors: train a list of configs, never raising for a failed run (a failure is a record).

    execute(todo, devices, label, backend="local", cluster=None)

local     one device: the runs train in this process, one after another. Several devices: one spawned worker
          process per device, each training one run at a time. A worker that dies (the OOM killer, kill -9) has its
          run recorded as failed, with the signal, and is replaced; the other runs go on. Workers end with the
          campaign: SIGTERM or Ctrl-C stop them first, and a campaign killed outright takes them along (the kernel's
          parent-death signal on Linux, and a watchdog thread polling the parent pid anywhere).
submitit  one cluster job per run through submitit (Slurm; its local executor with cluster={"cluster": "local"}),
          the job calling the same train(config), so records, locks and manifests are the same as locally. A
          preempted or timed-out job requeues itself (submitit's checkpoint protocol) and train() resumes from the
          run's ckpt.pt.

A run another process holds (RunLocked) is reported (status "running"), not failed.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

from lab import records

BACKENDS = ("local", "submitit")
CLUSTER_KEYS = {"partition": str, "gpus_per_job": int, "timeout_min": int, "cpus_per_job": int, "cluster": str}
CLUSTERS = ("slurm", "local")  # submitit's: local runs every job at once on this machine (tests, a dry run)
STOP_WAIT_S = 3.0  # how long stopped workers get to exit on SIGTERM before SIGKILL
POLL_S = 1.0  # how often submitted jobs are polled (submitit rate-limits its sacct calls itself)


def _train(config, progress: bool = False) -> dict:
    from lab.train import train  # imported when needed (tests patch this function)
    return train(config, progress=progress)


def _world() -> tuple[int, int]:
    """(rank, world size) of this process as torchrun or a multi-task job exports them (0, 1 otherwise)."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _record_failure(config, exc: BaseException, run_id: str | None = None) -> dict:
    """Make sure a run that raised has a summary saying so (train writes one unless it failed before starting)."""
    run_id = run_id or config.run_id(_world()[1])
    run_dir = Path(config.runs_dir) / run_id
    try:
        s = records.read_summary(run_dir)
    except records.CorruptRecord:
        s = None
    if s is None or s.get("status") != "failed":
        s = {"run_id": run_id, "status": "failed", "campaign": config.campaign, "steps": 0,
             "final_val_loss": None, "best_val_loss": None, "error": f"{type(exc).__name__}: {exc}\n"
             f"{''.join(traceback.format_exception(exc))}"}
        records.write_json(run_dir / "summary.json", s)
    return s


def _config(cfg_dict: dict):
    from lab.config import Config
    return Config(**{**cfg_dict, "adam_betas": tuple(cfg_dict["adam_betas"])})


def _run_config(cfg_dict: dict) -> dict:
    """Train one config given as a dict; a failure is recorded and returned, never raised; a run another process
    holds is skipped (status running, nothing written). In a multi-process run only rank 0 records."""
    config = _config(cfg_dict)
    rank, world = _world()
    try:
        return _train(config, progress=False)
    except records.RunLocked as e:
        print(f"[lab] skipped: {e}; a rerun of the campaign picks it up", file=sys.stderr, flush=True)
        return {"run_id": config.run_id(world), "status": "running"}
    except Exception as e:  # noqa: BLE001 - a failed run is a record, the campaign goes on
        if rank != 0:
            return {"run_id": config.run_id(world), "status": "failed", "error": f"{type(e).__name__}: {e}"}
        s = _record_failure(config, e)
        print(f"[lab] run {config.run_id(world)} failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return s


def _record_lost(config, run_id: str, why: str) -> dict:
    """The summary of a run whose process or job ended without returning one: the final summary it wrote before it
    ended, "running" when another process holds it now, else a failed summary saying `why` (written under the
    run's lock; a rerun resumes the run from its last checkpoint)."""
    run_dir = Path(config.runs_dir) / run_id
    try:
        lock = records.RunLock(run_dir, run_id).acquire()
    except records.RunLocked:
        return {"run_id": run_id, "status": "running"}
    try:
        with contextlib.suppress(records.CorruptRecord):
            s = records.read_summary(run_dir)
            if s and s["status"] in records.FINAL:
                return s
        steps = max((r["step"] + 1 for r in records.read_metrics(run_dir) if "train_loss" in r), default=0)
        s = {"run_id": run_id, "status": "failed", "campaign": config.campaign, "steps": steps,
             "final_val_loss": None, "best_val_loss": None,
             "error": f"{why}; rerun the campaign to resume the run from its last checkpoint"}
        records.write_json(run_dir / "summary.json", s)
    finally:
        lock.release()
    records.warn(f"run {run_id} failed: {why}")
    return s


def _check_args(devices: list[str], backend: str, cluster: dict | None) -> dict:
    if backend not in BACKENDS:
        raise ValueError(f"executor: unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if not devices:
        raise ValueError("executor: devices is empty; give at least one (auto, cpu, cuda, cuda:N)")
    cluster = dict(cluster or {})
    for k, v in cluster.items():
        if k not in CLUSTER_KEYS:
            raise ValueError(f"executor: unknown cluster key {k!r}; valid: {', '.join(CLUSTER_KEYS)}")
        low = 0 if k == "gpus_per_job" else 1
        if k == "cluster" and v not in CLUSTERS:
            raise ValueError(f"executor: cluster={v!r}; valid: {', '.join(CLUSTERS)}")
        if isinstance(v, bool) or not isinstance(v, CLUSTER_KEYS[k]) or (isinstance(v, int) and v < low):
            valid = f"an int >= {low}" if CLUSTER_KEYS[k] is int else "a string"
            raise ValueError(f"executor: cluster {k}={v!r}; valid: {valid}")
    return cluster


def execute(todo: list, devices: list[str], label: str, backend: str = "local",
            cluster: dict | None = None) -> list[dict]:
    """Train every config of `todo`; return their summaries (in `todo` order). A failed run is a record, never an
    exception; a run another process holds comes back as status "running"."""
    cluster = _check_args(devices, backend, cluster if backend == "submitit" else None)  # local: no cluster
    if not todo:
        return []
    from tqdm import tqdm
    bar = tqdm(total=len(todo), desc=label, unit="run", file=sys.stderr)
    out: dict[int, dict] = {}

    def done(i: int, s: dict) -> None:
        out[i] = s
        bar.set_postfix_str(f"{s.get('run_id')} {s['status']}")
        bar.update()

    try:
        if backend == "submitit":
            _execute_submitit(todo, label, cluster, done)
        elif len(devices) == 1:
            if devices[0].startswith("cuda:"):
                import torch
                torch.cuda.set_device(int(devices[0].split(":")[1]))
            for i, cfg in enumerate(todo):
                done(i, _run_config(cfg.to_dict()))
        else:
            _execute_workers(todo, devices, done)
    finally:
        bar.close()
    return [out[i] for i in range(len(todo))]


# -----------------------------------------------------------------------------------------------------------------
# local: one spawned worker per device, replaced when it dies, ended with the campaign

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _end_with(parent: int) -> None:
    """End this process when process `parent` ends, however it ends (kill -9 included): the kernel's parent-death
    signal on Linux, and a watchdog thread polling the parent pid (other systems, and a parent that died before
    prctl was called)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            import ctypes
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="lab-parent-watchdog", daemon=True).start()


def _work(conn, device: str, threads: int, parent: int) -> None:
    """A worker: trains the config dicts it receives on `device`, one at a time, and sends back their summaries."""
    _end_with(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the campaign stops us
    import torch
    from tqdm import tqdm
    tqdm.set_lock(threading.RLock())  # not tqdm's default multiprocessing lock: a semaphore os._exit would leak
    torch.set_num_threads(threads)
    if device.startswith("cuda:"):
        torch.cuda.set_device(int(device.split(":")[1]))
    while True:
        try:
            cfg = conn.recv()
        except EOFError:
            cfg = None
        if cfg is None:  # done: every record is on disk, nothing to finalize (torch's teardown takes seconds)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        conn.send(_run_config(cfg))


class _Worker:
    """A spawned worker process on one device and the run it is training (None when idle)."""

    def __init__(self, ctx, device: str, threads: int):
        self.device, self.cfg = device, None
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_work, args=(child, device, threads, os.getpid()), name=f"lab-worker-{device}")
        self.proc.start()
        child.close()  # the worker holds the only other end: its death makes self.conn readable (EOF)

    def death(self) -> str:
        """How the worker ended (after its pipe closed without a summary)."""
        self.proc.join(STOP_WAIT_S)
        code = self.proc.exitcode
        if code is None:
            self.proc.kill()
            self.proc.join()
            return f"closed its pipe and was killed (pid {self.proc.pid})"
        if code == -signal.SIGKILL:
            return f"was killed by SIGKILL (signal 9, pid {self.proc.pid}; the out-of-memory killer sends it)"
        if code < 0:
            return f"was killed by {signal.Signals(-code).name} (signal {-code}, pid {self.proc.pid})"
        return f"exited with code {code} (pid {self.proc.pid})"


def _stop(workers: list[_Worker]) -> None:
    """End every worker: SIGTERM, then SIGKILL for any still alive after STOP_WAIT_S (a killed run resumes from its
    last checkpoint; the kernel drops its lock)."""
    for w in workers:
        with contextlib.suppress(OSError):
            w.conn.close()
        if w.proc.is_alive():
            w.proc.terminate()
    deadline = time.monotonic() + STOP_WAIT_S
    for w in workers:
        w.proc.join(max(0.0, deadline - time.monotonic()))
        if w.proc.is_alive():
            w.proc.kill()
            w.proc.join()


@contextlib.contextmanager
def _on_sigterm(stop):
    """While the block runs, SIGTERM first calls stop(), then does what it did before (by default: ends this
    process, with the status SIGTERM gives). Installed from the main thread only (elsewhere workers still end with
    the process)."""
    old = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread() or old == signal.SIG_IGN:
        yield
        return

    def handler(signum, frame):
        stop()
        signal.signal(signal.SIGTERM, old)
        if callable(old):
            old(signum, frame)
        else:
            os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _execute_workers(todo: list, devices: list[str], done) -> None:
    import multiprocessing as mp
    from multiprocessing.connection import wait
    ctx = mp.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // len(devices))
    pending = list(enumerate(todo))
    workers: list[_Worker] = []
    with _on_sigterm(lambda: _stop(workers)):
        try:
            workers += [_Worker(ctx, d, threads) for d in devices[:len(todo)]]
            while pending or any(w.cfg for w in workers):
                for k, w in enumerate(workers):
                    while w.cfg is None and pending:
                        try:
                            w.conn.send(pending[0][1].to_dict())
                            w.cfg = pending.pop(0)
                        except OSError:  # it died while idle: replace it
                            w.death()
                            w = workers[k] = _Worker(ctx, w.device, threads)
                busy = {w.conn: w for w in workers if w.cfg}
                for conn in wait(list(busy)):
                    w = busy[conn]
                    (i, cfg), w.cfg = w.cfg, None
                    try:
                        s = conn.recv()
                    except (EOFError, OSError):
                        s = _record_lost(cfg, cfg.run_id(), f"the worker process training it on {w.device} "
                                         f"{w.death()}")
                        workers.remove(w)
                        if pending:  # a fresh worker takes its device
                            workers.append(_Worker(ctx, w.device, threads))
                    done(i, s)
            for w in workers:
                w.conn.send(None)  # no more runs: each worker returns
            for w in workers:
                w.proc.join(STOP_WAIT_S)
        finally:
            _stop(workers)


# -----------------------------------------------------------------------------------------------------------------
# submitit: one cluster job per run

class SubmititRun:
    """One run as a submitit job. It calls the same train(config) as a local worker (a job with several GPUs runs
    one process per GPU, as torchrun would). Preempted or timed out, submitit calls checkpoint(): the job requeues
    itself unchanged, and train() resumes from the run's last ckpt.pt (steps after it are recomputed)."""

    def __init__(self, cfg_dict: dict, run_id: str, world: int, cwd: str):
        self.cfg, self.run_id, self.world, self.cwd = cfg_dict, run_id, world, cwd

    def __call__(self) -> dict:
        import submitit
        os.chdir(self.cwd)  # relative paths in configs (runs_dir, data_dir) mean the campaign's working directory
        if self.world > 1:
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        config = _config(self.cfg)
        here = config.run_id(self.world)
        if here != self.run_id:  # e.g. device auto resolving differently on the node: never write another run
            why = (f"this job would train run {here} ({config.execution()}, {self.world} process(es)) but the "
                   f"campaign asked for run {self.run_id}: pin the device kind the nodes have (devices [\"cuda\"])")
            if _world()[0] == 0:
                return _record_failure(config, RuntimeError(why), run_id=self.run_id)
            return {"run_id": self.run_id, "status": "failed", "error": why}
        if _world()[0] == 0 and (Path(config.runs_dir) / here / "ckpt.pt").exists():
            print(f"[lab] run {here}: resuming from its checkpoint", flush=True)
        return _run_config(self.cfg)

    def checkpoint(self, *args, **kwargs):
        """Called by submitit on preemption or timeout: requeue this same run (train() resumes it)."""
        import submitit
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def submitit_executor(folder: Path, label: str, cluster: dict):
    """A submitit AutoExecutor with the Slurm parameters of `cluster` (partition, gpus_per_job, timeout_min,
    cpus_per_job; cluster="local" runs the jobs on this machine). Refused with one line where there is no Slurm."""
    import shutil

    import submitit
    kind = cluster.get("cluster", "slurm")
    if kind == "slurm" and shutil.which("sbatch") is None:
        raise ValueError("executor submitit: no Slurm here (sbatch not found on PATH); run the campaign on a Slurm "
                         "login node, or use executor local")
    gpus = cluster.get("gpus_per_job", 1)
    tasks = max(1, gpus)  # one process per GPU
    ex = submitit.AutoExecutor(folder=folder, cluster=kind)
    params = dict(name=f"lab:{label}", timeout_min=cluster.get("timeout_min", 240), gpus_per_node=gpus, nodes=1,
                  tasks_per_node=tasks, cpus_per_task=max(1, cluster.get("cpus_per_job", 8 * tasks) // tasks))
    if cluster.get("partition"):
        params["slurm_partition"] = cluster["partition"]
    ex.update_parameters(**params)
    return ex


def _job_error(job) -> str:
    """Why a job ended without a summary: its state and the last lines of its error log."""
    try:
        err = str(job.exception() or "")
    except Exception as e:  # noqa: BLE001 - a job that cannot even say why
        err = f"{type(e).__name__}: {e}"
    tail = " | ".join(line for line in err.strip().splitlines()[-3:] if line.strip())
    return f"its submitit job {job.job_id} ended in state {job.state} without a summary ({tail[-300:]}; log: " \
           f"{job.paths.stderr})"


def _execute_submitit(todo: list, label: str, cluster: dict, done) -> None:
    from submitit.core.utils import UncompletedJobError
    from tqdm import tqdm
    world = max(1, cluster.get("gpus_per_job", 1))
    folder = Path(todo[0].runs_dir).absolute() / ".submitit" / label.replace("/", "-")
    ex = submitit_executor(folder, label, cluster)
    runs = [SubmititRun(cfg.to_dict(), cfg.run_id(world), world, os.getcwd()) for cfg in todo]
    with ex.batch():  # one job array: one sbatch for the whole stage
        jobs = [ex.submit(r) for r in runs]
    ids = jobs[0].job_id + (f"..{jobs[-1].job_id}" if len(jobs) > 1 else "")
    tqdm.write(f"[lab] {label}: {len(jobs)} submitit job(s) on {ex.cluster} ({ids}), logs in {folder}",
               file=sys.stderr)
    waiting = dict(enumerate(jobs))
    with _on_sigterm(lambda: _cancel(waiting.values())):
        try:
            while waiting:
                for i, job in list(waiting.items()):
                    if not job.done():
                        continue
                    del waiting[i]
                    try:
                        s = job.results()[0]  # rank 0's summary
                    except UncompletedJobError:
                        s = _record_lost(todo[i], runs[i].run_id, _job_error(job))
                    done(i, s)
                if waiting:
                    time.sleep(POLL_S)
        finally:
            _cancel(waiting.values())


def _cancel(jobs) -> None:
    """Cancel the jobs this campaign is still waiting for (it ends: so do they)."""
    for job in list(jobs):
        with contextlib.suppress(Exception):
            job.cancel(check=False)
