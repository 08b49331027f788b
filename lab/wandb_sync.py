"""`python -m lab wandb-sync NAME`: mirror a campaign's finished runs to wandb from their records (metrics.jsonl,
config.json, summary.json), for runs trained before wandb was on, or reused by a campaign that mirrors (a finished
run is never retrained, so it is never mirrored live). One wandb run per run id (group: the campaign, name: the id).
"""
from __future__ import annotations

from lab import records
from lab.results import manifest_path, read_manifest, run_status, runs_dir


def sync(name: str, preset: str = "cpu", tag: str = "", mode: str = "offline", project: str = "lab") -> list[str]:
    """Upload (mode online) or write for `wandb sync` (mode offline) every finished or diverged run of the campaign's
    manifest; return the run ids mirrored. A run whose records cannot be read is named and skipped."""
    if mode not in ("offline", "online"):
        raise ValueError(f"wandb-sync: mode {mode!r}; valid: offline, online")
    m = read_manifest(name, preset, tag)
    if m is None:
        raise FileNotFoundError(f"no records of campaign {name} at preset {preset}{', variant ' + tag if tag else ''} "
                                f"(looked for {manifest_path(name, preset, tag)})")
    import wandb
    done = []
    for rid in dict.fromkeys(r["run_id"] for r in m["runs"]):
        run_dir = runs_dir(preset) / rid
        s = run_status(run_dir)
        if s["status"] not in records.FINAL:
            continue
        try:
            config = records.read_json(run_dir / "config.json")
        except (FileNotFoundError, records.CorruptRecord) as e:
            records.warn(f"wandb-sync: run {rid} skipped ({e})")
            continue
        run = wandb.init(project=project, group=name, name=rid, id=rid, resume="allow", config=config,
                         dir=str(run_dir), mode=mode, reinit="create_new")
        for row in records.read_metrics(run_dir):
            run.log(row, step=row["step"])
        run.summary.update({k: v for k, v in s.items() if isinstance(v, (int, float, str)) and k != "error"})
        run.finish()
        done.append(rid)
        print(f"[lab] wandb-sync: run {rid} ({s['status']}) mirrored ({mode})", flush=True)
    if done:
        wandb.teardown()  # stop wandb's service now: left to atexit, it prints a 'Connection lost' traceback
    print(f"[lab] wandb-sync: {len(done)} run(s) of campaign {name} at preset {preset} mirrored to wandb project "
          f"{project!r} ({mode}{': `wandb sync` uploads them later' if mode == 'offline' else ''})", flush=True)
    return done
