"""`python -m lab run | data | campaign | report | bench`: parse, validate, call one function."""
from __future__ import annotations

import argparse
import os
import shlex
import sys

from lab.config import PRESETS, get_config, parse_overrides


def cmd_run(args) -> int:
    from lab.train import train
    config = get_config(args.preset, **parse_overrides(args.overrides))  # refused here, before any work
    try:
        s = train(config)
    except OSError as e:  # a full disk, a lost mount: recorded in summary.json as failed; one line, no traceback
        if isinstance(e, FileNotFoundError):
            raise
        print(f"error: run {config.run_id()} failed ({type(e).__name__}: {e}); recorded as failed in its "
              "summary.json, a rerun resumes from its last checkpoint", file=sys.stderr)
        return 1
    from lab.optim.distributed import rank
    if rank() != 0:  # under torchrun only rank 0 reports
        return 0
    val = s["final_val_loss"]
    print(f"run {s['run_id']}: {s['status']} after {s['steps']} steps, "
          f"val loss {val:.4f}" if val is not None else f"run {s['run_id']}: {s['status']} after {s['steps']} steps")
    return 0 if s["status"] == "finished" else 2


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
    r = sub.add_parser("run", help="train one run and write runs/<run id>/",
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
    from lab.campaign import CampaignPending
    from lab.records import RunLocked
    # the command as typed, for meta.json (notebook kernels and campaign workers inherit it; their argv is a launcher)
    own = "LAB_COMMAND" not in os.environ
    if own:
        os.environ["LAB_COMMAND"] = shlex.join(["python", "-m", "lab", *argv])
    try:
        return args.fn(args)
    except (RunLocked, CampaignPending) as e:  # another process is training this run: it stays the only writer
        print(f"error: {e}", file=sys.stderr)
        return 3
    except (ValueError, FileNotFoundError) as e:  # bad input or missing data: one clear line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if own:
            os.environ.pop("LAB_COMMAND", None)


if __name__ == "__main__":
    sys.exit(main())
