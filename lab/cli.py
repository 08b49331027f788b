"""`python -m lab run | data | campaign | report | wandb-sync | bench`: parse, validate, call one function."""
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


def _given(args) -> dict:
    given = {k: v for k, v in (args.param or [])}
    if args.verbose:
        given["verbose"] = True
    return given


def _check_campaign(p: argparse.ArgumentParser, args) -> None:
    """While parsing: `campaign NAME --help`, and every parameter checked before main imports anything heavy (a bad
    one is refused in well under a second, one line, exit 2)."""
    from lab import campaigns
    from lab.campaign import check_params, help_text
    try:
        if args.help:
            if args.name in (None, "all"):
                p.print_help()
                print("\ncampaigns:\n" + "\n".join(f"  {n}: {campaigns.get(n).QUESTION}" for n in campaigns.names()))
            else:
                print(help_text(args.name))
            sys.exit(0)
        if args.name is None:
            p.error("a campaign name is required (or `all`); see `python -m lab campaign --help`")
        if args.name != "all":
            given = _given(args)
            if "preset" in given:
                raise ValueError("campaign: give the preset with --preset, not as a parameter")
            check_params(args.name, {**given, "preset": args.preset})
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def cmd_campaign(args) -> int:
    from lab.campaign import run_campaign
    run_campaign(args.name, preset=args.preset, given=_given(args))
    return 0


def cmd_report(args) -> int:
    from lab import report
    if args.list:
        from lab.results import variants
        rows = variants(args.preset if args.preset_given else None)
        for v in rows:
            print(f"{v['preset']:8} {v['campaign']:16} {v['tag'] or '(default)':10} {v['params'] if v['tag'] else ''}")
        if not rows:
            print("no campaign records yet (runs/<preset>/campaigns/ is empty)")
        return 0
    if args.name is None:
        raise ValueError("report: give a campaign name, `all`, or --list")
    if args.name == "all":
        written, failed = report.render_all(args.preset)
        for path in written:
            print(f"wrote {_rel(path)}")
        for f in failed:
            print(f"error: could not render {f}", file=sys.stderr)
        return 2 if failed else 0
    from lab import campaigns
    report.render_report(args.name, args.preset, args.variant)
    print(f"wrote {_rel(report.report_file(campaigns.get(args.name), args.preset, args.variant))}")
    return 0


def cmd_wandb_sync(args) -> int:
    from lab.wandb_sync import sync
    sync(args.name, args.preset, args.variant, args.mode, args.project)
    return 0


def _rel(p) -> str:
    from lab.results import ROOT
    return os.path.relpath(p, ROOT) if os.path.abspath(p).startswith(str(ROOT)) else str(p)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that calls `self.check(self, args)` once parsed (campaign: checks before heavy imports)."""
    check = None

    def parse_known_args(self, args=None, namespace=None):
        ns, rest = super().parse_known_args(args, namespace)
        if self.check is not None:
            self.check(self, ns)
        return ns, rest


def cmd_bench(args) -> int:
    from lab.bench import run_benchmarks
    run_benchmarks(args.names, size=args.size)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lab", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
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
    c = sub.add_parser("campaign", add_help=False, help="run a campaign (lab/campaigns/<name>.py) through its notebook "
                       "with papermill and render its report", description="Run a campaign through its notebook "
                       "(papermill), reusing every finished run, and render its report. `campaign NAME --help` lists "
                       "its parameters.")
    c.add_argument("name", nargs="?", help="a campaign (see --help), or `all` for every lab-notebook campaign in order")
    c.add_argument("--preset", default="cpu", choices=list(PRESETS))
    c.add_argument("-p", "--param", nargs=2, action="append", metavar=("KEY", "VALUE"),
                   help="set a parameter of the campaign (as declared in lab/campaigns/<name>.py)")
    c.add_argument("--verbose", action="store_true", help="print more (verify: the routing table)")
    c.add_argument("-h", "--help", action="store_true", help="this help, or with NAME the campaign's parameters")
    c.set_defaults(fn=cmd_campaign)
    c.check = _check_campaign
    rp = sub.add_parser("report", help="re-render a campaign's report (or `all`: every report and INDEX.md) from "
                                       "the run records alone; --list: the variants that exist")
    rp.add_argument("name", nargs="?", help="a campaign, or all")
    rp.add_argument("--preset", default=None, choices=list(PRESETS), help="default: cpu")
    rp.add_argument("--variant", default="", help="tag of a variant (non-default parameters); see --list")
    rp.add_argument("--list", action="store_true", help="list every campaign record and variant under runs/")
    rp.set_defaults(fn=cmd_report)
    rp.check = lambda p, a: a.__dict__.update(preset_given=a.preset is not None, preset=a.preset or "cpu")
    w = sub.add_parser("wandb-sync", help="mirror a campaign's finished runs to wandb from their records")
    w.add_argument("name", help="a campaign")
    w.add_argument("--preset", default="cpu", choices=list(PRESETS))
    w.add_argument("--variant", default="", help="tag of a variant (see `report --list`)")
    w.add_argument("--mode", default="offline", choices=["offline", "online"])
    w.add_argument("--project", default="lab", help="wandb project (default: lab)")
    w.set_defaults(fn=cmd_wandb_sync)
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
