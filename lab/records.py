"""Run records, written atomically: config.json, routing.md, meta.json, metrics.jsonl, summary.json, ckpt.pt.

A run directory explains itself: what was run (config, routing), with what (commit, versions, device), what
happened (metrics, summary). Every file is replaced atomically (write a temp file, fsync, os.replace), so a kill
at any moment leaves either the old or the new file, never half of one.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import pickle
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import torch

FINAL = ("finished", "diverged")  # a run in one of these states is never retrained
RECORD_FILES = ("config.json", "routing.md", "routing.json", "meta.json", "metrics.jsonl", "summary.json", "ckpt.pt")
LOCK_FILE = "lock"  # holds the pid of the process training the run (an flock: dropped by the kernel when it dies)


class CorruptRecord(ValueError):
    """A record file that cannot be read; the message names the file."""


class RunLocked(RuntimeError):
    """Another process holds the run's lock (it is training that run right now)."""


def warn(msg: str) -> None:
    print(f"[lab] {msg}", file=sys.stderr, flush=True)


def atomic_write(path: Path, data: bytes | str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; records are for everyone to read
        fault("atomic_written", path.name)  # tests: the temp file complete, before it replaces the record
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj) -> None:
    atomic_write(path, json.dumps(obj, indent=2, default=str) + "\n")


def read_json(path: Path):
    """The parsed file; CorruptRecord naming it if it is not valid JSON."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptRecord(f"{path}: not valid JSON ({e})") from None


def read_summary(run_dir: Path) -> dict | None:
    """summary.json of a run, None if there is none; CorruptRecord naming the file if it cannot be read."""
    p = Path(run_dir) / "summary.json"
    if not p.exists():
        return None
    s = read_json(p)
    if not isinstance(s, dict) or "status" not in s:
        raise CorruptRecord(f"{p}: not a run summary (no status)")
    return s


def read_metrics(run_dir: Path) -> list[dict]:
    """Rows of metrics.jsonl. A line that does not parse (a kill or a full disk mid-append tears the last one) is
    dropped with a warning naming the file and line; the rows after it are kept."""
    p = Path(run_dir) / "metrics.jsonl"
    if not p.exists():
        return []
    lines = p.read_text().split("\n")
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or "step" not in row:
                raise ValueError("not a metrics row")
            rows.append(row)
        except ValueError:
            torn = i == len(lines)  # no newline after it: the write never finished
            warn(f"{p}: dropped {'a torn last line' if torn else f'unreadable line {i}'} ({line[:60]!r})")
    return rows


def truncate_metrics(run_dir: Path, step: int, rows: list[dict] | None = None) -> None:
    """Keep only rows before `step` (resuming from a checkpoint taken at `step` recomputes the rest). `rows`: the
    log as already read (read_metrics), so that a torn line is reported once."""
    rows = [r for r in (read_metrics(run_dir) if rows is None else rows) if r["step"] < step]
    atomic_write(Path(run_dir) / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


class MetricsLog:
    """Appends one JSON line per step. The log always agrees with the state the run continues from: a run that
    starts at step 0 starts a fresh log, a run resumed at step k keeps exactly the rows before k."""

    def __init__(self, run_dir: Path, start: int = 0, rows: list[dict] | None = None):
        path = Path(run_dir) / "metrics.jsonl"
        if start == 0:
            atomic_write(path, "")
        else:
            truncate_metrics(run_dir, start, rows)
        self.f = open(path, "a")

    def log(self, row: dict) -> None:
        line = json.dumps(row) + "\n"
        fault("metrics_torn", row["step"], before=lambda: (self.f.write(line[:len(line) // 2]), self.f.flush()))
        self.f.write(line)
        self.f.flush()

    def close(self) -> None:
        self.f.close()


def take_lock(path: Path):
    """An exclusive, non-blocking flock on `path`, which then holds our pid: (the open file, None), or (None, the
    holder's pid) when another process holds it. The kernel drops the lock when its holder dies."""
    import fcntl
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        pid = f.read().strip() or "?"
        f.close()
        return None, pid
    f.truncate(0)
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f, None


class RunLock:
    """One writer per run: an exclusive, non-blocking flock on runs/<id>/lock, held while the run trains.

    The kernel drops an flock when its process dies, so a kill -9 never leaves a stale lock. A second process on
    the same run gets RunLocked at once, naming the run and the holder's pid."""

    def __init__(self, run_dir: Path, run_id: str):
        self.path, self.run_id, self.f = Path(run_dir) / LOCK_FILE, run_id, None

    def acquire(self) -> RunLock:
        self.f, pid = take_lock(self.path)
        if self.f is None:
            raise RunLocked(f"run {self.run_id} is being trained by another process (pid {pid}; lock {self.path}): "
                            "not starting a second writer")
        return self

    def release(self) -> None:
        if self.f is not None:
            self.f.truncate(0)  # no pid claims a free run (the file stays: unlinking it would race a new holder)
            self.f.close()  # closing the descriptor drops the flock
            self.f = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def is_locked(run_dir: Path) -> bool:
    """True if a process holds the run's lock right now (it is being trained)."""
    p = Path(run_dir) / LOCK_FILE
    if not p.exists():
        return False
    try:
        RunLock(p.parent, "").acquire().release()
        return False
    except RunLocked:
        return True


def clean_leftovers(run_dir: Path) -> list[Path]:
    """Remove the temp files of interrupted atomic writes (`.<record>.XXXX`); returns what was removed."""
    gone = [p for name in RECORD_FILES for p in Path(run_dir).glob(f".{name}.*")]
    for p in gone:
        p.unlink(missing_ok=True)
    return gone


PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # the checkout whose code this process runs
CODE_KEYS = ("git_commit", "git_code_tree", "git_dirty", "git_diff_sha1")  # a code version, as recorded
LAB_WRITES = ("reports", "runs")  # what the lab writes itself: never part of a code version


def _git(*args: str, root: Path = PACKAGE_ROOT) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def code_version(root: Path = PACKAGE_ROOT) -> dict:
    """The code this process runs: HEAD's commit; a hash of HEAD's tracked code (its tree without reports/ and
    runs/, so that a commit of run records or reports alone is the same code version); whether tracked code differs
    from HEAD, and a hash of that difference (two different uncommitted edits are two versions). Untracked files
    are left out; every value is None where git cannot tell."""
    lab_writes = [f":(exclude){d}" for d in LAB_WRITES]
    diff = _git("diff", "HEAD", "--binary", "--no-ext-diff", "--", ".", *lab_writes, root=root)
    tree = _git("ls-tree", "HEAD", root=root)  # top level: one line per file or subtree, with its hash
    code = None if tree is None else "\n".join(ln for ln in tree.splitlines() if ln.split("\t")[-1] not in LAB_WRITES)
    return {"git_commit": _git("rev-parse", "HEAD", root=root),
            "git_code_tree": hashlib.sha1(code.encode()).hexdigest()[:12] if code is not None else None,
            "git_dirty": None if diff is None else bool(diff),
            "git_diff_sha1": hashlib.sha1(diff.encode()).hexdigest()[:12] if diff else None}


def same_code(a: dict | None, b: dict | None) -> bool:
    """Whether two code versions (code_version() dicts, or segments) are the same code: the same committed code
    (its tree hash; the commit where one was recorded without it) and the same uncommitted edits."""
    if a is None or b is None:
        return False
    key = "git_code_tree" if a.get("git_code_tree") and b.get("git_code_tree") else "git_commit"
    return all(a.get(k) == b.get(k) for k in (key, "git_dirty", "git_diff_sha1"))


def describe_code(v: dict | None) -> str:
    """'3946633a1b2c', '3946633a1b2c + uncommitted edits 5f0c9e2d71aa', or 'of an unknown version (...)'."""
    if v is None:
        return "of an unrecorded version"
    if not v.get("git_commit"):
        return "of an unknown version (no git)"
    edits = f" + uncommitted edits {v.get('git_diff_sha1') or '(not hashed)'}" if v.get("git_dirty") else ""
    return f"{v['git_commit'][:12]}{edits}"


def segment(code: dict, start_step: int) -> dict:
    """One stretch of training of a run by one process (group): its code version, the step it started at, when."""
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return {**{k: code.get(k) for k in CODE_KEYS}, "start_step": start_step, "date": date}


def segments(meta: dict) -> list[dict]:
    """meta.json's segments; one written before they were kept reads as one segment from step 0 (its
    git_commit and git_dirty; neither its code tree nor its diff was hashed)."""
    if "segments" in meta:
        return meta["segments"]
    return [{"git_commit": meta.get("git_commit"), "git_code_tree": None, "git_dirty": meta.get("git_dirty"),
             "git_diff_sha1": None, "start_step": 0, "date": None}]


def code_versions(run_dir: Path) -> list[dict]:
    """The distinct code versions a run was trained with, in order: CODE_KEYS and `start_step`, the step each first
    trained at. More than one means the record mixes code versions (train never resumes across them; a record of
    older code may). Reads meta.json with segments and the older ones without (one version, from step 0).
    [] for a run without meta.json; CorruptRecord naming the file if it cannot be read or is not a run's meta."""
    p = Path(run_dir) / "meta.json"
    if not p.exists():
        return []
    meta = read_json(p)
    if not isinstance(meta, dict) or not isinstance(meta.get("segments", []), list):
        raise CorruptRecord(f"{p}: not a run's meta.json (not an object with a list of segments)")
    out = []
    for seg in segments(meta):
        if not isinstance(seg, dict):
            raise CorruptRecord(f"{p}: a segment is not an object: {seg!r:.80}")
        if not out or not same_code(out[-1], seg):
            out.append({**{k: seg.get(k) for k in CODE_KEYS}, "start_step": seg.get("start_step")})
    return out


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


def command() -> str:
    """The command the user typed: LAB_COMMAND (set by the CLI, inherited by campaign notebook kernels and workers,
    whose own argv is a kernel launcher), else this process's argv."""
    return os.environ.get("LAB_COMMAND") or shlex.join(sys.argv)


def run_meta(device: torch.device, world_size: int = 1, code: dict | None = None) -> dict:
    """Code version (code_version(), or `code` as already measured), library versions and hardware: what makes a
    run log self-describing (modded-nanogpt)."""
    code = code_version() if code is None else code
    return {**{k: code.get(k) for k in CODE_KEYS}, "versions": versions(), "device": device_name(device),
            "world_size": world_size, "platform": platform.platform(), "hostname": platform.node(),
            "command": command()}


def save_checkpoint(path: Path, state: dict) -> None:
    """torch.save to a temp file, fsync, os.replace: a kill leaves the old checkpoint or the new one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            try:
                torch.save(state, f)
            except RuntimeError as e:  # torch's zip writer reports a failed write (a full disk) as RuntimeError
                raise OSError(f"writing {path} failed ({str(e).splitlines()[0][:100]}; a full disk?)") from e
            f.flush()
            os.fsync(f.fileno())
            os.chmod(tmp, 0o644)  # like every other record (mkstemp makes 0600)
            fault("ckpt_written", state.get("step"))  # tests: the temp file complete, before it replaces ckpt.pt
        os.replace(tmp, path)
        fault("ckpt_replaced", state.get("step"))  # tests: the new checkpoint in place
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path) -> dict:
    """A checkpoint's tensors, on the CPU (load_state_dict moves them to each parameter's device; the RNG state must
    stay a CPU ByteTensor). CorruptRecord naming the file if it cannot be read."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)  # a checkpoint is data, never code
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, AttributeError, pickle.UnpicklingError) as e:
        why = ": ".join([type(e).__name__, *str(e).splitlines()[:1]])  # EOFError() has no message
        raise CorruptRecord(f"{path}: unreadable checkpoint ({why[:160]})") from None


def fault(point: str, at=None, before=None) -> None:
    """Fault injection for tests/test_faults.py: LAB_FAULT=<point> (or <point>@<at>: at that step or file only)
    kills this process with SIGKILL at that point, after calling `before` (e.g. to write half a line)."""
    want = os.environ.get("LAB_FAULT")
    if want and want in (point, f"{point}@{at}"):
        if before is not None:
            before()
        os.kill(os.getpid(), signal.SIGKILL)


WANDB_TIMEOUT_S = 10.0  # give up on a wandb server that does not answer within this (the run goes on)


def _unreachable(url: str, timeout: float) -> str | None:
    """Why `url` cannot be used (connection refused, DNS, timeout, a server error), or None if it answers. A server
    that answers 5xx would also hold wandb.init for ~20 s (login retries, then init_timeout)."""
    import urllib.error
    import urllib.request
    try:
        urllib.request.urlopen(url, timeout=timeout).close()
    except urllib.error.HTTPError as e:
        return f"HTTP {e.code} {e.reason}" if e.code >= 500 else None  # 4xx: it answered, reachable
    except Exception as e:  # noqa: BLE001
        return f"{type(e).__name__}: {getattr(e, 'reason', e)}"
    return None


class WandbMirror:
    """Mirror metrics to wandb (mode disabled | offline | online). A wandb failure never stops a run."""

    def __init__(self, config, run_dir: Path, run_id: str):
        self.run = None
        if config.wandb == "disabled":
            return
        try:
            if config.wandb == "online":  # an unreachable server would hold wandb.init for ~100 s of retries
                url = os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai"
                down = _unreachable(url, timeout=WANDB_TIMEOUT_S / 2)
                if down:
                    raise ConnectionError(f"{url} cannot be used ({down})")
            import wandb
            self.run = wandb.init(project=config.wandb_project, group=config.campaign or None, name=run_id,
                                  id=run_id, resume="allow", config=config.to_dict(), dir=str(run_dir),
                                  mode=config.wandb, reinit="create_new",
                                  settings=wandb.Settings(init_timeout=WANDB_TIMEOUT_S))
        except Exception as e:  # noqa: BLE001 - wandb is a mirror, never a requirement
            warn(f"wandb mirror off for run {run_id}, which goes on without it: {type(e).__name__}: "
                 f"{str(e).splitlines()[0][:200]}")

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
