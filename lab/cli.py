"""`python -m lab run | data | campaign | report | wandb-sync | bench`: parse, validate, call one function."""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from lab.config import PRESETS, get_config, parse_overrides


def cmd_run(args) -> int:
    overrides = parse_overrides(args.overrides)
    get_config(args.preset, **overrides)  # refused here, before torch is imported (well under a second)
    overrides.setdefault("runs_dir", _preset_runs_dir(args.preset))  # where campaigns keep this preset's runs
    config = get_config(args.preset, **overrides)
    from lab.train import recorded, train
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
    try:
        return args.fn(args)
    except (ValueError, FileNotFoundError) as e:  # bad input or missing data: one clear line, no traceback
        _say(f"error: {e}")
        return 2
    except RuntimeError as e:
        from lab.campaign import CampaignPending  # imported here: a refusal above never waits for torch
        from lab.records import RunLocked
        if not isinstance(e, (RunLocked, CampaignPending)):
            raise
        _say(f"error: {e}")  # another process is training this run: it stays the only writer
        return 3


def _say(line: str) -> None:
    """One line on stderr, from rank 0 only under torchrun."""
    if os.environ.get("RANK", "0") == "0":
        print(line, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
