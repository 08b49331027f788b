"""`python -m lab run | data | campaign | report | bench`: parse, validate, call one function."""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from lab.config import PRESETS, get_config, parse_overrides


def cmd_run(args) -> int:
    from lab.train import recorded, train
    overrides = parse_overrides(args.overrides)
    overrides.setdefault("runs_dir", _preset_runs_dir(args.preset))  # where campaigns keep this preset's runs
    config = get_config(args.preset, **overrides)  # refused here, before any work
    world = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun's; train() joins the process group
    already = recorded(config, world) is not None
    try:
        s = train(config)
    except OSError as e:  # a full disk, a lost mount: one line, no traceback, saying what was recorded
        if isinstance(e, FileNotFoundError) and not hasattr(e, "recorded"):
            raise  # missing data, refused before any work (main: one line, exit 2)
        _say(f"error: run {config.run_id(world)} failed ({type(e).__name__}: {e}); {_what_was_recorded(e)}")
        return 1
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        return 0
    val = s["final_val_loss"]
    line = f"run {s['run_id']}: {'already ' if already else ''}{s['status']} after {s['steps']} steps"
    line += f", val loss {val:.4f}" if val is not None else ""
    print(line + (f" ({Path(config.runs_dir) / s['run_id']}, not retrained)" if already else ""))
    return 0 if s["status"] == "finished" else 2


def _preset_runs_dir(preset: str) -> str:
    """runs/<preset> (LAB_RUNS_DIR moves the root): relative to the repo root when run from there, as campaigns
    record it in config.json, else absolute."""
    from lab.results import ROOT, runs_dir
    d = runs_dir(preset)
    return os.path.relpath(d, ROOT) if Path.cwd().resolve() == ROOT and d.is_relative_to(ROOT) else str(d)


def _what_was_recorded(e: OSError) -> str:
    """train() sets e.recorded (True when it wrote a failed summary.json, else why it could not) and e.resumes_at
    (the step of the run's last checkpoint)."""
    rec, at = getattr(e, "recorded", None), getattr(e, "resumes_at", None)
    if rec is None:
        return "it failed before training started: nothing recorded"
    rerun = ("a rerun resumes from its last checkpoint, if any" if at is None
             else f"a rerun resumes from its checkpoint at step {at}" if at
             else "a rerun starts from step 0 (no checkpoint)")
    if rec is True:
        return f"recorded as failed in its summary.json, {rerun}"
    return f"recording the failure failed too ({rec}): no summary.json says so, {rerun}"


def cmd_data(args) -> int:
    from lab.data import prepare
    prepare(args.name, args.data_dir, shards=args.shards)
    return 0


def cmd_campaign(args) -> int:
    from lab.campaign import run_campaign
    params = {k: v for k, v in (args.param or [])}
    run_campaign(args.name, preset=args.preset, params=params)
    return 0


def cmd_report(args) -> int:
    from lab.report import render_report
    print(render_report(args.name, args.preset, args.variant))
    return 0


def cmd_bench(args) -> int:
    from lab.bench import run_benchmarks
    run_benchmarks(args.names, size=args.size)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lab", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="train one run and write runs/<preset>/<run id>/ (reused if already finished)",
                       description="Train one run. Overrides are key=value pairs of lab.config.Config fields, "
                                   "e.g. `python -m lab run --preset cpu optimizer=adamw lr=0.01`.")
    r.add_argument("--preset", default="cpu", choices=list(PRESETS), help="defaults to start from (default: cpu)")
    r.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    r.set_defaults(fn=cmd_run)
    d = sub.add_parser("data", help="prepare token shards (shakespeare: embedded; fineweb: download from the hub)")
    d.add_argument("name", choices=["shakespeare", "fineweb"])
    d.add_argument("--shards", type=int, default=1, help="fineweb: number of 100M-token train shards")
    d.add_argument("--data-dir", default="data", help="where shards are written (default: data)")
    d.set_defaults(fn=cmd_data)
    c = sub.add_parser("campaign", help="execute a campaign notebook with papermill and render its report")
    c.add_argument("name", help="a notebook in notebooks/ (verify, lr_sweep, horizon, geodesic, advanced, "
                                "lazy_projection) or `all` for every campaign in order")
    c.add_argument("--preset", default="cpu", choices=list(PRESETS))
    c.add_argument("-p", "--param", nargs=2, action="append", metavar=("KEY", "VALUE"),
                   help="override a parameter of the notebook's parameters cell")
    c.set_defaults(fn=cmd_campaign)
    rp = sub.add_parser("report", help="re-render a campaign's report (or `all`: every report and INDEX.md) from "
                                       "the run records alone")
    rp.add_argument("name", help="verify, lr_sweep, horizon, geodesic, advanced, lazy_projection, or all")
    rp.add_argument("--preset", default="cpu", choices=list(PRESETS))
    rp.add_argument("--variant", default="", help="tag of a run with non-default parameters (runs/<preset>/campaigns/)")
    rp.set_defaults(fn=cmd_report)
    b = sub.add_parser("bench", help="run benchmarks, write reports/BENCHMARKS.md")
    b.add_argument("names", nargs="*", help="subset of benchmarks (default: all)")
    b.add_argument("--size", default="full", choices=["full", "tiny"], help="tiny: seconds, for tests")
    b.set_defaults(fn=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser().parse_args(argv)
    # the command as typed, for meta.json (notebook kernels and campaign workers inherit it; their argv is a launcher)
    own = "LAB_COMMAND" not in os.environ
    if own:
        os.environ["LAB_COMMAND"] = shlex.join(["python", "-m", "lab", *argv])
    try:
        return _call(args)
    except KeyboardInterrupt as e:  # Ctrl-C: one line and the shell's exit code for SIGINT, no traceback
        generic = "interrupted; rerun the same command to resume (finished runs are kept, others resume)"
        _say(str(e) if args.cmd == "run" and str(e) else generic)
        return 130
    finally:
        if own:
            os.environ.pop("LAB_COMMAND", None)


def _call(args) -> int:
    """args.fn(args); an error the user can act on ends as one line: exit 2 bad input or missing data, 3 another
    process is training that run."""
    from lab.campaign import CampaignPending
    from lab.records import RunLocked
    try:
        return args.fn(args)
    except (RunLocked, CampaignPending) as e:  # another process is training this run: it stays the only writer
        _say(f"error: {e}")
        return 3
    except (ValueError, FileNotFoundError) as e:  # bad input or missing data: one clear line, no traceback
        _say(f"error: {e}")
        return 2


def _say(line: str) -> None:
    """One line on stderr, from rank 0 only under torchrun."""
    if os.environ.get("RANK", "0") == "0":
        print(line, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
