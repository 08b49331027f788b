"""Run records, written atomically: config.json, routing.md, meta.json, metrics.jsonl, summary.json, ckpt.pt.

A run directory explains itself: what was run (config, routing), with what (commit, versions, device), what
happened (metrics, summary). Every file is replaced atomically (write a temp file, fsync, os.replace), so a kill
at any moment leaves either the old or the new file, never half of one.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import torch

FINAL = ("finished", "diverged")  # a run in one of these states is never retrained


def atomic_write(path: Path, data: bytes | str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o644)  # mkstemp makes 0600; records are for everyone to read
    os.replace(tmp, path)


def write_json(path: Path, obj) -> None:
    atomic_write(path, json.dumps(obj, indent=2, default=str) + "\n")


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def read_summary(run_dir: Path) -> dict | None:
    p = Path(run_dir) / "summary.json"
    return read_json(p) if p.exists() else None


def read_metrics(run_dir: Path) -> list[dict]:
    """Rows of metrics.jsonl; a torn last line (a kill mid-write) is ignored."""
    p = Path(run_dir) / "metrics.jsonl"
    rows = []
    if p.exists():
        for line in p.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return rows


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Keep only rows before `step` (resuming from a checkpoint taken at `step` recomputes the rest)."""
    rows = [r for r in read_metrics(run_dir) if r["step"] < step]
    atomic_write(Path(run_dir) / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


class MetricsLog:
    """Appends one JSON line per step. Rows after the last checkpoint are rewritten on resume."""

    def __init__(self, run_dir: Path):
        self.f = open(Path(run_dir) / "metrics.jsonl", "a")

    def log(self, row: dict) -> None:
        self.f.write(json.dumps(row) + "\n")
        self.f.flush()

    def close(self) -> None:
        self.f.close()


def _git(*args: str) -> str | None:
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    return f"cpu: {cpu} ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def versions() -> dict:
    out = {"python": sys.version.split()[0], "torch": torch.__version__}
    for pkg in ("lab", "triton", "numpy", "pandas", "papermill", "wandb"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def run_meta(device: torch.device, world_size: int = 1) -> dict:
    """Code version, library versions and hardware: what makes a run log self-describing (modded-nanogpt)."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": _git("rev-parse", "HEAD") or None, "git_dirty": bool(status) if status is not None else None,
            "versions": versions(), "device": device_name(device), "world_size": world_size,
            "platform": platform.platform(), "hostname": platform.node(), "argv": sys.argv}


def save_checkpoint(path: Path, state: dict) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    return torch.load(path, map_location=map_location, weights_only=True)  # a checkpoint is data, never code


class WandbMirror:
    """Mirror metrics to wandb (mode disabled | offline | online). A wandb failure never stops a run."""

    def __init__(self, config, run_dir: Path, run_id: str):
        self.run = None
        if config.wandb == "disabled":
            return
        try:
            import wandb
            self.run = wandb.init(project=config.wandb_project, group=config.campaign or None, name=run_id,
                                  id=run_id, resume="allow", config=config.to_dict(), dir=str(run_dir),
                                  mode=config.wandb, reinit="create_new")
        except Exception as e:  # noqa: BLE001 - wandb is a mirror, never a requirement
            print(f"[lab] wandb disabled for this run: {type(e).__name__}: {e}", file=sys.stderr)

    def log(self, row: dict) -> None:
        if self.run is not None:
            try:
                self.run.log(row, step=row["step"])
            except Exception as e:  # noqa: BLE001
                print(f"[lab] wandb log failed, mirroring stopped: {e}", file=sys.stderr)
                self.run = None

    def finish(self) -> None:
        if self.run is not None:
            try:
                self.run.finish()
            except Exception:  # noqa: BLE001
                pass
