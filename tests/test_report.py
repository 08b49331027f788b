"""Reports are rendered from run records alone: fake run directories and manifests here, no training."""
import json
import math
import re

import pytest
from scipy import stats

from lab import family, records
from lab import report as R
from lab import results as res
from lab.campaigns import horizon as horizon_mod
from lab.cli import main
from lab.config import get_config
from lab.index import render_index

PRESET = "cpu"  # fake records: nothing trains, so the lab notebook's own preset and paths can be exercised


def fake_run(name: str, overrides: dict, seed: int, outcome, preset=PRESET, steps=None) -> str:
    """One run directory; outcome: a final val loss, "diverged" or "failed". The val curve ends at the outcome."""
    cfg = get_config(preset, **overrides, seed=seed, campaign=name)
    d = res.runs_dir(preset) / cfg.run_id()
    n = steps or cfg.steps
    records.write_json(d / "config.json", cfg.to_dict())
    records.write_json(d / "meta.json", {"run_id": cfg.run_id(), "git_commit": "abc123def4567890",
                                         "git_dirty": False, "versions": {"python": "3.11", "torch": "2.13"},
                                         "device": "cpu: test", "world_size": 1})
    val = outcome if isinstance(outcome, float) else None
    pts = [(0, 5.5), (n // 2, (5.5 + val) / 2 if val else 5.0), (n, val)] if val else [(0, 5.5)]
    records.atomic_write(d / "metrics.jsonl", "".join(
        json.dumps({"step": s, "val_loss": v, "elapsed_s": float(s)}) + "\n" for s, v in pts))
    records.write_json(d / "summary.json", {
        "run_id": cfg.run_id(), "status": "finished" if val else outcome, "steps": n, "final_val_loss": val,
        "best_val_loss": val or 5.5, "final_train_loss": val, "diverged_at": 3 if outcome == "diverged" else None,
        "wall_time_s": float(n), "tokens_per_s": 1000.0 + seed, "max_sphere_drift": 1e-7,
        "error": "RuntimeError: boom\ntraceback" if outcome == "failed" else None})
    return cfg.run_id()


def fake_campaign(name: str, stages: dict, params: dict, choices: list = (), preset=PRESET, tag="") -> None:
    """stages: {stage: {arm: (overrides, {seed: outcome})}}."""
    rows = []
    for stage, arms in stages.items():
        for arm, (overrides, outcomes) in arms.items():
            for seed, out in outcomes.items():
                rows.append({"stage": stage, "arm": arm, "seed": seed, "overrides": overrides,
                             "run_id": fake_run(name, overrides, seed, out, preset, overrides.get("steps"))})
    records.write_json(res.manifest_path(name, preset, tag), {
        "campaign": name, "preset": preset, "variant": tag or None, "params": params, "base": {},
        "choices": [{"key": k, "value": v, "stage": s, "seeds": [0, 1, 2], "grid": [], "why": "test"}
                    for k, v, s in choices], "runs": rows})


M = lambda lr, aux=0.004, **kw: {"optimizer": "muon", "lr": lr, "embed_lr": aux, "head_lr": aux, "scalar_lr": aux,
                                 **kw}
A = lambda lr, **kw: {"optimizer": "adamw", "adamw_lr": lr, **kw}
SEL = lambda *v: dict(enumerate(v))
CONF = lambda *v: {100 + i: x for i, x in enumerate(v)}
SWEEP_PARAMS = {"seeds": [0, 1], "confirm_seeds": [100, 101, 102, 103, 104, 105], "muon_lrs": [0.023, 0.05, 0.1],
                "adamw_lrs": [0.0005, 0.004, 0.008], "aux_lrs": [0.004, 0.008], "steps": 0}


def fake_sweep(conf_muon=(1.500, 1.521, 1.489), conf_adamw=(1.600, 1.620, 1.590)):
    """lr_sweep's stages as the issue-20 design records them (narrower grids; rows without tags, as before)."""
    fake_campaign("lr_sweep", {
        "plan": {"adamw lr=0.0005": (A(0.0005), SEL(2.0, 2.1, 2.05))},  # the plan's Adam lr: exploratory
        "select": {"muon lr=0.023 aux=0.008": (M(0.023, 0.008), SEL(1.60, 1.61, 1.62)),
                   "muon lr=0.05 aux=0.008": (M(0.05, 0.008), SEL(1.55, 1.56, 1.54)),
                   "muon lr=0.1 aux=0.008": (M(0.1, 0.008), SEL("diverged", 1.2, 1.3)),  # lowest mean, a seed diverged
                   "adamw lr=0.002": (A(0.002), SEL(1.80, 1.82, 1.81)),
                   "adamw lr=0.004": (A(0.004), SEL(1.70, 1.72, 1.71)),
                   "adamw lr=0.008": (A(0.008), SEL(1.65, 1.66, 1.64))},
        "aux": {"muon lr=0.05 aux=0.004": (M(0.05), SEL(1.55, 1.56, 1.54)),
                "muon lr=0.05 aux=0.008": (M(0.05, 0.008), SEL(1.53, 1.545, 1.52))},
        "confirm": {"muon lr=0.05 aux=0.008": (M(0.05, 0.008), CONF(*conf_muon)),
                    "adamw lr=0.008": (A(0.008), CONF(*conf_adamw))}},
        SWEEP_PARAMS, [("muon_lr", 0.05, "select"), ("adamw_lr", 0.008, "select"), ("aux_lr", 0.008, "aux")])


def comparisons(text: str) -> list[list[str]]:
    block = re.split(r"## (?:Exploratory c|C)omparisons", text)[1].split("\n## ")[0]
    return [[c.strip() for c in line.split("|")[1:-1]] for line in block.splitlines()
            if line.startswith("| ") and not line.startswith("| comparison")]


def test_lr_sweep_report(dirs):
    fake_sweep()
    text = R.render_report("lr_sweep", PRESET)
    assert text == (dirs / "reports" / "MUON_LR_SWEEP_REPORT.md").read_text()  # cpu, default params: reports/
    assert text.startswith("# Muon learning-rate sweep on nGPT\n\n**Parameters that differ from the defaults:** "
                           "`muon_lrs=[0.023, 0.05, 0.1]`, `adamw_lrs=[0.0005, 0.004, 0.008]`, `aux_lrs=[0.004, "
                           "0.008]`.\n\n**Question.**")  # the fake records' grids are narrower than the defaults
    assert ("- regenerate: `python -m lab campaign lr_sweep --preset cpu -p muon_lrs '[0.023, 0.05, 0.1]' -p "
            "adamw_lrs '[0.0005, 0.004, 0.008]' -p aux_lrs '[0.004, 0.008]'` (reuses finished runs)") in text
    # the headline is the family's muon_vs_adamw@400, judged on the confirmation seeds, paired by seed, with its
    # 95% interval (checked against scipy) and its change from the gap measured before AdamW was retuned
    mu, ad = (1.500, 1.521, 1.489), (1.600, 1.620, 1.590)
    d = sum(m - a for m, a in zip(mu, ad)) / 3
    ci = stats.ttest_rel(mu, ad).confidence_interval(0.95)
    assert (f"**Answer (at 0.8M tokens).** At 0.8M tokens (400 steps), tuned Muon against the better-tuned AdamW: "
            f"better: Δ = {d:+.4f} [{ci.low:+.4f}, {ci.high:+.4f}] (95%) nats") in text
    assert f"it moved by {d + 0.089:+.4f} from the -0.089 measured before" in text
    assert "3 of 6 confirmation seeds finished, 3 pending" in text and "confirmation seeds 100–105" in text
    assert "selection seeds 0, 1" in text
    assert "Muon: lr 0.05; aux lr 0.008" in text and "The better-tuned AdamW: lr 0.008" in text
    assert "**Grid edge:** the AdamW lr 0.008 is the highest value of its grid [0.002, 0.004, 0.008]" in text
    rows = comparisons(text)
    assert [r[0].split(" `")[0] for r in rows] == ["best Muon lr", "best AdamW arm", "best aux lr",
                                                   "the plan's Adam lr"]  # exploratory: no verdicts
    assert all(len(r) == 5 for r in rows)  # comparison, seeds, Δ ± CI, p, MDE: exploratory, no Holm, no verdict
    conf = text.split("## Confirmatory comparisons (the lab-wide family)")[1].split("\n## ")[0]
    assert "| muon_vs_adamw@400 |" in conf and "| better " in conf
    for heading in ("## How it was measured", "## Exploratory comparisons", "## Selection grid", "## Confirmation",
                    "## Figures", "## Throughput (indicative only)", "## Diverged, failed and unfinished runs",
                    "## Environment"):
        assert heading in text, heading
    assert "- muon lr=0.1 aux=0.008 seed 0 (`" in text and "diverged at step 3" in text
    assert "abc123def456" in text and "cpu: test" in text
    for png in ("lr_sweep_sweep.png", "lr_sweep_curves.png", "lr_sweep_forest.png"):
        assert (dirs / "reports" / "figs" / png).stat().st_size > 1000 and f"](figs/{png})" in text
    first = (dirs / "reports" / "figs" / "lr_sweep_sweep.png").read_bytes()
    assert R.render_report("lr_sweep", PRESET) == text  # regenerable: same records, same bytes
    assert (dirs / "reports" / "figs" / "lr_sweep_sweep.png").read_bytes() == first


def test_a_reports_own_comparisons_are_exploratory(dirs):
    """Verdict words belong to the lab-wide confirmatory family (lab/family.py) only: a report's own rows carry
    intervals and unadjusted p, no Holm over the report and no verdict column; lr_sweep's headline is the family's
    muon_vs_adamw@400, never a second test of the same runs."""
    fake_sweep()
    text = R.render_report("lr_sweep", PRESET)
    block = text.split("## Exploratory comparisons")[1].split("\n## ")[0]
    assert "| verdict" not in block and "Holm p" not in block and "no verdict" in block
    assert not [r for r in comparisons(text) if "confirmation" in r[1]]  # the confirmation runs: the family's


@pytest.mark.parametrize("muon, adamw, expect", [
    ((1.60, 1.50, 1.70), (1.61, 1.55, 1.68), "tuned Muon against the better-tuned AdamW: inconclusive: Δ ="),
    ((1.80, 1.82, 1.79), (1.60, 1.63, 1.58), "tuned Muon against the better-tuned AdamW: worse: Δ ="),
])
def test_answer_sentences(dirs, muon, adamw, expect):
    fake_sweep(muon, adamw)
    assert expect in R.render_report("lr_sweep", PRESET)


def test_one_confirmation_seed_is_not_a_test(dirs):
    fake_campaign("lr_sweep", {"confirm": {"muon": (M(0.05), CONF(1.5)), "adamw": (A(0.008), CONF(1.6))}},
                  SWEEP_PARAMS)
    text = R.render_report("lr_sweep", PRESET)
    assert "Δ = -0.1000 (1 seed, no interval) nats" in text


def horizon(budgets=(100, 200, 400), muon=None, adamw=None):
    muon = muon or {100: (1.9, 1.91), 200: (1.7, 1.72), 400: (1.5, 1.52)}
    adamw = adamw or {100: (1.85, 1.86), 200: (1.75, 1.76), 400: (1.65, 1.66)}
    conf = {}
    for b in budgets:
        conf[f"muon steps={b}"] = (M(0.05, steps=b), CONF(*muon[b]))
        conf[f"adamw steps={b}"] = (A(0.008, steps=b), CONF(*adamw[b]))
    fake_campaign("horizon", {"confirm": conf}, {"seeds": [0, 1], "confirm_seeds": [100, 101],
                                                 "budgets": list(budgets)},
                  [("muon_lr", 0.05, "upstream"), ("adamw_lr", 0.008, "upstream")]
                  + [(f"{o}_lr@{b}", lr, "select") for b in budgets for o, lr in (("muon", 0.05), ("adamw", 0.008))])


def test_horizon_report_crossing_and_speedup(dirs):
    horizon()
    text = R.render_report("horizon", PRESET)
    assert "| 400 steps (0.8M tokens)" in text and "muon_vs_adamw@200" in text  # the family's entries
    # Δ > 0 at 100 steps, < 0 from 200 on: the mean Δ changes sign between 0.2M and 0.4M tokens
    assert "The mean Δ changes sign between 0.2M and 0.4M tokens" in text
    # AdamW's final loss vs tokens: 1.855 (0.2M), 1.755 (0.4M), 1.655 (0.8M). Muon's 1.71 at 0.4M lies between
    # AdamW's 0.4M and 0.8M points: log-log interpolation gives 2^w x Muon's tokens
    w = (math.log(1.71) - math.log(1.755)) / (math.log(1.655) - math.log(1.755))
    rows = horizon_mod.speedup_rows(R.analyse("horizon", PRESET))
    assert [x["token multiplier [interval]"][:6] for x in rows] == ["< 205k", f"{2 ** w:.2f}x ", "> 819k"]
    assert "< 205k tokens" in text and "> 819k tokens" in text  # censored: never extrapolated
    assert "steps to target" not in text.lower() and "of 400 steps" not in text  # the mid-warmdown read-off is gone
    assert "**Answer (at 0.2M–0.8M tokens).**" in text and "- Budget: 100–400 steps × 16 sequences" in text
    for png in ("horizon_curves.png", "horizon_speedup.png", "horizon_forest.png"):
        assert (dirs / "reports" / "figs" / png).exists(), png


def test_horizon_without_crossing(dirs):
    horizon(muon={100: (1.8, 1.81), 200: (1.69, 1.70), 400: (1.5, 1.52)})  # Δ: -0.05, -0.06, -0.145
    assert "The mean Δ keeps its sign from 0.2M to 0.8M tokens: Muon is ahead on average at every budget measured; " \
           "the mean gap grows with every larger budget." in R.render_report("horizon", PRESET)
    horizon(muon={100: (1.8, 1.81), 200: (1.6, 1.62), 400: (1.6, 1.62)})  # Δ: -0.05, -0.145, -0.045
    assert "Muon is ahead on average at every budget measured; the mean gap is largest at 0.4M tokens " \
           "(Δ = -0.1450) and smallest at 0.8M (Δ = -0.0450)." in R.render_report("horizon", PRESET)


def test_a_run_without_a_final_record_adds_no_commit(dirs):
    """A run still training (or killed before its summary) is not behind any number: its meta.json commit is not
    listed, so a clone without its partial directory renders the same report."""
    horizon()
    m = records.read_json(res.manifest_path("horizon", PRESET))
    partial = res.runs_dir(PRESET) / m["runs"][0]["run_id"]
    (partial / "summary.json").unlink()
    meta = records.read_json(partial / "meta.json")
    records.write_json(partial / "meta.json", {**meta, "git_commit": "fff000fff000aaaa"})
    text = R.render_report("horizon", PRESET)
    assert "git commit(s) of the runs: abc123def456;" in text and "fff000fff000" not in text
    assert "fff000fff0" not in render_index(PRESET)[0].read_text()


def test_lazy_interaction_is_a_paired_difference_of_differences(dirs):
    mk = lambda k, lr=0.023: M(lr, 0.008, **({"project_every": k} if k != 1 else {}))
    ak = lambda k, lr=0.008: A(lr, **({"project_every": k} if k != 1 else {}))
    sel = {"muon every=1": (mk(1), SEL(1.50, 1.52)), "muon every=10": (mk(10), SEL(1.52, 1.55)),
           "adamw every=1": (ak(1), SEL(1.60, 1.61)), "adamw every=10": (ak(10), SEL(1.66, 1.68))}
    conf = {"muon every=1 lr=0.023": (mk(1), CONF(1.50, 1.52, 1.51)),
            "muon every=7 lr=0.0163": (mk(7, 0.0163), CONF(1.52, 1.55, 1.53)),
            "adamw every=1 lr=0.008": (ak(1), CONF(1.60, 1.61, 1.62)),
            "adamw every=7 lr=0.0113": (ak(7, 0.0113), CONF(1.66, 1.68, 1.67))}
    fake_campaign("lazy_projection", {"select": sel, "confirm": conf}, {"seeds": [0, 1], "confirm_seeds": [100, 101,
                                                                                                          102]},
                  [("lr[muon@1]", 0.023, "tune"), ("lr[muon@7]", 0.0163, "tune"), ("lr[adamw@1]", 0.008, "tune"),
                   ("lr[adamw@7]", 0.0113, "tune")])
    text = R.render_report("lazy_projection", PRESET)
    d = [(1.52 - 1.50) - (1.66 - 1.60), (1.55 - 1.52) - (1.68 - 1.61)]  # exploratory: the fixed-lr stage
    row = next(r for r in comparisons(text) if r[0].startswith("laziness interaction at every=10, fixed lr"))
    assert row[1] == "2 selection" and row[2].startswith(f"{sum(d) / 2:+.4f} ±")
    d = [(1.52 - 1.50) - (1.66 - 1.60), (1.55 - 1.52) - (1.68 - 1.61), (1.53 - 1.51) - (1.67 - 1.62)]
    from lab.campaigns.lazy_projection import arm_tags  # the fake rows carry no tags: the campaign derives them
    j = family.paired_of(family.entry("lazy_interaction_7"), res.results("lazy_projection", PRESET,
                                                                         arm_tags=arm_tags))
    assert j.seeds == [100, 101, 102] and j.delta == pytest.approx(sum(d) / 3) and j.d == pytest.approx(tuple(d))
    assert "| lazy_interaction_7 " in text and "The laziness interaction at every 7" in text


def test_lazy_answer_while_its_selection_is_unfinished_names_no_interval(dirs):
    sel = {"muon every=1": ({"optimizer": "muon", "project_every": 1}, SEL(1.50))}
    fake_campaign("lazy_projection", {"select": sel}, {"seeds": [0, 1], "confirm_seeds": [100, 101, 102]})
    text = R.render_report("lazy_projection", PRESET)
    assert "None" not in text.split("## How it was measured")[0]
    assert "each (optimizer, N) at its own tuned lr (not chosen yet)" in text
    assert "Muon projecting every 7 steps vs every step: not measured yet on the confirmation seeds" in text


def test_index_has_a_verdict_for_every_hypothesis(dirs):
    fake_sweep()
    written, failed = R.render_all(PRESET)
    assert written == [dirs / "reports" / "MUON_LR_SWEEP_REPORT.md", dirs / "reports" / "INDEX.md"] and not failed
    index = (dirs / "reports" / "INDEX.md").read_text()
    assert "| lr_sweep " in index and "[MUON_LR_SWEEP_REPORT.md](MUON_LR_SWEEP_REPORT.md)" in index
    assert "| compare " not in index  # ad hoc: never in the lab notebook's index
    assert "0.8M tokens/run" in index and "not run yet" in index  # the other campaigns
    hyp = index.split("## Hypotheses of the research plan")[1].split("\n## ")[0]
    rows = [line for line in hyp.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) >= len(family.FAMILY)  # every declared comparison, then rows campaigns add (index_rows)
    verdicts = [r.split("|")[3].strip() for r in rows[:len(family.FAMILY)]]
    assert set(verdicts) <= {"better", "worse", "equivalent", "inconclusive", "not tested yet", "1 seed: no test"}
    assert verdicts.count("not tested yet") >= len(family.FAMILY) - 4  # only horizon's entries can have data here
    assert "## Chain of settings" in index and "| lr_sweep   | muon_lr" in index


def test_report_names_corrupt_files_and_missing_records(dirs, capsys):
    with pytest.raises(FileNotFoundError, match="no campaign records at preset cpu"):
        R.render_all(PRESET)
    assert main(["report", "all"]) == 2 and "no campaign records" in capsys.readouterr().err
    fake_sweep()
    bad = next((res.runs_dir(PRESET)).glob("*/summary.json"))
    bad.write_text("{not json")
    text = R.render_report("lr_sweep", PRESET)
    assert f"failed: {bad}: not valid JSON" in text  # the run is reported as failed, naming the file
    res.manifest_path("lr_sweep", PRESET).write_text("garbage")
    assert main(["report", "lr_sweep"]) == 2
    assert f"{res.manifest_path('lr_sweep', PRESET)}: not valid JSON" in capsys.readouterr().err


def test_variants_and_other_presets_never_touch_the_lab_notebook(dirs):
    fake_sweep()
    R.render_report("lr_sweep", PRESET)
    committed = (dirs / "reports" / "MUON_LR_SWEEP_REPORT.md").read_text()
    fake_campaign("lr_sweep", {"confirm": {"muon": (M(0.05), CONF(1.4, 1.41)), "adamw": (A(0.008), CONF(1.6, 1.6))}},
                  {**SWEEP_PARAMS, "muon_lrs": [0.05]}, tag="abc123")
    R.render_report("lr_sweep", PRESET, "abc123")
    assert (dirs / "reports" / "cpu" / "MUON_LR_SWEEP_REPORT-abc123.md").exists()
    fake_campaign("lr_sweep", {"confirm": {"muon": (M(0.05), CONF(1.4, 1.41)), "adamw": (A(0.008), CONF(1.6, 1.6))}},
                  SWEEP_PARAMS, preset="smoke")
    R.render_report("lr_sweep", "smoke")
    assert (dirs / "reports" / "smoke" / "MUON_LR_SWEEP_REPORT.md").exists()
    assert (dirs / "reports" / "MUON_LR_SWEEP_REPORT.md").read_text() == committed
    assert not math.isnan(len(committed))


def test_a_sweep_whose_selection_is_unfinished_renders_its_leader_not_a_choice(dirs):
    """The lab notebook is re-rendered while a campaign runs: no choice recorded yet, some runs missing."""
    fake_campaign("lr_sweep", {"select": {"muon lr=0.023": (M(0.023), SEL(1.60, 1.61, 1.62)),
                                          "muon lr=0.05": (M(0.05), SEL(1.55, 1.56, 1.54)),
                                          "adamw lr=0.008": (A(0.008), SEL(1.65, 1.66, 1.64))}},
                  SWEEP_PARAMS, [])
    m = res.read_manifest("lr_sweep", PRESET)
    m["runs"] += [{"stage": "select", "arm": "muon lr=0.1", "seed": s, "overrides": M(0.1),
                   "run_id": get_config(PRESET, **M(0.1), seed=s, campaign="lr_sweep").run_id()} for s in (0, 1)]
    records.write_json(res.manifest_path("lr_sweep", PRESET), m)
    running, missing = (res.runs_dir(PRESET) / r["run_id"] for r in m["runs"][-2:])
    running.mkdir(parents=True)
    lock = records.RunLock(running, running.name).acquire()  # a trainer holds it: status "running"
    try:
        text = R.render_report("lr_sweep", PRESET)
    finally:
        lock.release()
    assert f"seed 0 (`{running.name}`): not finished yet" in text  # the same words in progress and never started:
    assert f"seed 1 (`{missing.name}`): not finished yet" in text  # the report reads the committed records only
    assert "At 0.8M tokens (400 steps), tuned Muon against the better-tuned AdamW: not measured yet" in text
    assert "The Muon lr is not chosen yet (selection unfinished); on the finished runs the leader is " \
           "`muon lr=0.05`" in text


def test_a_far_off_arm_is_left_off_the_delta_panels_scale():
    """The plan's Adam lr (+1.25 nats) would flatten the -0.03..-0.09 differences that matter: it goes off-scale."""
    from lab.plots import offscale
    assert offscale({"plan adam": 1.25, "muon 0.023": -0.09, "muon 0.05": -0.06, "adamw 0.004": 0.02}) == ["plan adam"]
    assert offscale({"a": 0.03, "b": -0.02, "c": 0.04}) == []  # all small: nothing is off-scale
    assert offscale({"a": 1.0, "b": 0.01}) == []  # two arms: no median to judge by


@pytest.mark.parametrize("edit, why", [
    ("drop final_val_loss", "finished, but final_val_loss is None, not a finite number"),  # a missing key
    ({"final_val_loss": None}, "finished, but final_val_loss is None, not a finite number"),
    ({"final_val_loss": float("nan")}, "finished, but final_val_loss is nan, not a finite number"),
    ({"final_val_loss": "1.5"}, "finished, but final_val_loss is '1.5', not a finite number"),
    ({"status": "complete"}, "status 'complete' is not one of finished, diverged, failed"),
])
def test_a_record_that_does_not_say_what_a_run_did_is_named_and_counted_bad(dirs, capsys, edit, why):
    """Finding 9: such a run is never silently dropped from a mean while its table says "finished 3"."""
    fake_sweep()
    m = records.read_json(res.manifest_path("lr_sweep", PRESET))
    row = next(r for r in m["runs"] if r["stage"] == "confirm" and r["seed"] == 100)  # the tuned Muon, seed 100
    path = res.runs_dir(PRESET) / row["run_id"] / "summary.json"
    s = records.read_json(path)
    if edit == "drop final_val_loss":
        s, edit = {k: v for k, v in s.items() if k != "final_val_loss"}, {}
    path.write_text(json.dumps({**s, **edit}))
    text = R.render_report("lr_sweep", PRESET)
    assert f"{path}: {why}; counted as a bad run" in capsys.readouterr().err  # one line naming the file
    conf = text.split("## Confirmation")[1].split("\n## ")[0]
    assert "| muon lr=0.05 aux=0.008 |      3 |          2 |          0 |                1 |" in conf
    assert f"seed 100 (`{row['run_id']}`): invalid: {path}: {why}" in text
    assert ", 2 confirmation seeds" in text.split("## How")[0]  # the headline pairs the two seeds that finished


def test_a_manifest_that_lists_a_run_twice_or_lacks_a_key_is_named(dirs, capsys):
    fake_sweep()
    path = res.manifest_path("lr_sweep", PRESET)
    m = records.read_json(path)
    records.write_json(path, {**m, "runs": [*m["runs"], m["runs"][-1]]})
    with pytest.raises(records.CorruptRecord, match=r"run rows 32 and 33 are both stage 'confirm', arm 'adamw "
                                                    r"lr=0.008', seed 102 \(a duplicated row\)"):
        R.render_report("lr_sweep", PRESET)
    records.write_json(path, {**m, "runs": [{k: v for k, v in m["runs"][0].items() if k != "run_id"}]})
    assert main(["report", "lr_sweep"]) == 2
    assert capsys.readouterr().err == f"error: {path}: run row 0 has no run_id\n"


def test_report_all_renders_what_it_can_and_lists_what_it_could_not(dirs, capsys):
    fake_sweep()
    horizon()
    path = res.manifest_path("horizon", PRESET)
    m = records.read_json(path)
    records.write_json(path, {**m, "runs": [*m["runs"], m["runs"][0]]})
    assert main(["report", "all"]) == 2
    out, err = capsys.readouterr()
    assert out.splitlines() == ["wrote reports/MUON_LR_SWEEP_REPORT.md", "wrote reports/INDEX.md"] or \
        out.splitlines() == [f"wrote {dirs}/reports/MUON_LR_SWEEP_REPORT.md", f"wrote {dirs}/reports/INDEX.md"]
    assert err.startswith(f"error: could not render horizon: CorruptRecord: {path}: run rows 0 and ") and \
        err.count("\n") == 1
    index = (dirs / "reports" / "INDEX.md").read_text()
    assert "| horizon " in index and "could not be rendered: horizon: CorruptRecord" in index
    assert "| lr_sweep " in index and "0.8M tokens/run" in index


def test_report_list_and_an_unknown_variant_lists_them(dirs, capsys):
    fake_sweep()
    fake_campaign("lr_sweep", {"confirm": {"muon": (M(0.05), CONF(1.4, 1.41)), "adamw": (A(0.008), CONF(1.6, 1.6))}},
                  {**SWEEP_PARAMS, "muon_lrs": [0.05]}, preset="smoke", tag="abc123")
    assert main(["report", "--list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["cpu", "lr_sweep", "(default)"]
    assert out[1].split()[:3] == ["smoke", "lr_sweep", "abc123"] and "'muon_lrs': [0.05]" in out[1]
    assert main(["report", "lr_sweep", "--preset", "smoke", "--variant", "nope"]) == 2
    err = capsys.readouterr().err
    assert "no records of campaign lr_sweep at preset smoke, variant 'nope': existing variants: abc123" in err
    assert main(["report", "lr_sweep", "--preset", "smoke", "--variant", "abc123"]) == 0
    text = (dirs / "reports" / "smoke" / "MUON_LR_SWEEP_REPORT-abc123.md").read_text()
    assert text.split("\n")[2] == ("**Variant `abc123`. Parameters that differ from the defaults:** `muon_lrs=[0.05]`, "
                                   "`adamw_lrs=[0.0005, 0.004, 0.008]`, `aux_lrs=[0.004, 0.008]`.")
    assert "- regenerate: `python -m lab campaign lr_sweep --preset smoke -p muon_lrs '[0.05]' -p adamw_lrs" in text


def test_figures_are_written_atomically(dirs, monkeypatch):
    """Finding 10: a figure write that fails (a full disk) leaves the previous PNG whole, and no temp file."""
    fake_sweep()
    R.render_report("lr_sweep", PRESET)
    png = dirs / "reports" / "figs" / "lr_sweep_sweep.png"
    before = png.read_bytes()
    fake_sweep(conf_muon=(1.40, 1.41, 1.42))  # other numbers: other figures

    def full_disk(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(records.os, "replace", full_disk)
    with pytest.raises(OSError, match="No space left"):
        R.render_report("lr_sweep", PRESET)
    assert png.read_bytes() == before and not [p for p in png.parent.iterdir() if p.name.startswith(".")]


def test_confirmatory_renders_the_familys_verdicts(dirs, monkeypatch):
    """r.confirmatory(): the campaign's entries of lab/family.py judged with Holm over the whole family (here only
    lazy_projection has records: every other entry counts as p = 1), a table with the four-way verdicts, the interval
    at the verdict's level, and a forest plot."""
    from lab.campaigns import lazy_projection as lazy
    from lab.stats import Family, interaction, paired
    mk = lambda opt, k: {"optimizer": opt, "project_every": k}
    six = lambda base, noise: {100 + i: base + 0.01 * (i % 3) + e for i, e in enumerate(noise)}
    wobble = (0.002, -0.001, 0.0015, -0.0005, 0.001, -0.002)
    losses = {("muon", 1): six(1.500, [0] * 6), ("muon", 3): six(1.480, wobble), ("muon", 7): six(1.500, wobble),
              ("adamw", 1): six(1.600, [0] * 6), ("adamw", 7): six(1.640, wobble[::-1])}
    fake_campaign("lazy_projection", {"confirm": {f"{o} every={k}": (mk(o, k), v) for (o, k), v in losses.items()}},
                  {"seeds": [0, 1], "confirm_seeds": family.CONFIRM_SEEDS})
    real = lazy.analyse
    monkeypatch.setattr(lazy, "analyse", lambda r: (real(r), r.confirmatory()))
    text = R.render_report("lazy_projection", PRESET)
    block = text.split("## Confirmatory comparisons (the lab-wide family)")[1].split("\n## ")[0]
    expect = Family(tuple(family.KEYS)).judge({
        "lazy_every_3": paired(losses["muon", 3], losses["muon", 1]),
        "lazy_every_7": paired(losses["muon", 7], losses["muon", 1]),
        "lazy_interaction_7": interaction(losses["muon", 7], losses["muon", 1], losses["adamw", 7],
                                          losses["adamw", 1])})
    got = {j.name: j for j in expect}
    assert got["lazy_every_3"].verdict == "better" and got["lazy_every_7"].verdict == "equivalent"
    for key in ("lazy_every_3", "lazy_every_7", "lazy_interaction_7"):
        row = got[key].row()
        assert f"| {row['Δ [interval]']} " in block.replace("  ", " ") or row["Δ [interval]"] in block, key
        assert row["verdict"] in block
    assert f"{len(family.FAMILY)} comparisons in all" in block and "δ = 0.01 nats" in block
    assert (dirs / "reports" / "figs" / "lazy_projection_forest.png").stat().st_size > 1000
    assert "](figs/lazy_projection_forest.png)" in text
