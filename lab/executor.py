"""Executors: train a list of configs on local devices (a spawn process pool over `devices`), never raising for a
failed run (a failure is a record)."""
from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

from lab import records


def _train(config, progress: bool = False) -> dict:
    from lab.train import train  # imported when needed (tests patch this function)
    return train(config, progress=progress)


def _record_failure(config, exc: BaseException) -> dict:
    """Make sure a run that raised has a summary saying so (train writes one unless it failed before starting)."""
    run_dir = Path(config.runs_dir) / config.run_id()
    try:
        s = records.read_summary(run_dir)
    except records.CorruptRecord:
        s = None
    if s is None or s.get("status") != "failed":
        s = {"run_id": config.run_id(), "status": "failed", "campaign": config.campaign, "steps": 0,
             "final_val_loss": None, "best_val_loss": None, "error": f"{type(exc).__name__}: {exc}\n"
             f"{''.join(traceback.format_exception(exc))}"}
        records.write_json(run_dir / "summary.json", s)
    return s


def _run_config(cfg_dict: dict) -> dict:
    """Train one config given as a dict; a failure is recorded and returned, never raised; a run another process
    holds is skipped (status running, nothing written)."""
    from lab.config import Config
    config = Config(**{**cfg_dict, "adam_betas": tuple(cfg_dict["adam_betas"])})
    try:
        return _train(config, progress=False)
    except records.RunLocked as e:
        print(f"[lab] skipped: {e}; a rerun of the campaign picks it up", file=sys.stderr, flush=True)
        return {"run_id": config.run_id(), "status": "running"}
    except Exception as e:  # noqa: BLE001 - a failed run is a record, the campaign goes on
        s = _record_failure(config, e)
        print(f"[lab] run {config.run_id()} failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return s


def _init_worker(device_queue, threads: int) -> None:
    import torch
    torch.set_num_threads(threads)
    device = device_queue.get()
    if device.startswith("cuda:"):
        torch.cuda.set_device(int(device.split(":")[1]))


def execute(todo: list, devices: list[str], label: str, backend: str = "local", cluster: dict | None = None) -> None:
    if backend != "local":
        raise ValueError(f"executor: unknown backend {backend!r}; valid: local")
    from tqdm import tqdm
    bar = tqdm(total=len(todo), desc=label, unit="run", file=sys.stderr)
    if len(devices) == 1:
        if devices[0].startswith("cuda:"):
            import torch
            torch.cuda.set_device(int(devices[0].split(":")[1]))
        for cfg in todo:
            s = _run_config(cfg.to_dict())
            bar.set_postfix_str(f"{cfg.run_id()} {s['status']}")
            bar.update()
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        for d in devices:
            queue.put(d)
        threads = max(1, (os.cpu_count() or 1) // len(devices))
        with ProcessPoolExecutor(len(devices), mp_context=ctx, initializer=_init_worker,
                                 initargs=(queue, threads)) as pool:
            futures = {pool.submit(_run_config, cfg.to_dict()): cfg for cfg in todo}
            try:
                for fut in as_completed(futures):
                    bar.set_postfix_str(f"{futures[fut].run_id()} {fut.result()['status']}")
                    bar.update()
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    bar.close()
