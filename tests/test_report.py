"""Reports are rendered from run records alone: fake run directories here, no training."""
import json
import math

import pytest

from lab import campaign as C
from lab import records
from lab import report as R
from lab.cli import main
from lab.config import get_config


def fake_campaign(name: str, arms: dict, preset: str = "smoke", notes=()) -> None:
    """arms: label -> (overrides, [outcome per seed]); an outcome is a final val loss, "diverged" or "failed"."""
    rows = []
    for label, (overrides, outcomes) in arms.items():
        for seed, out in enumerate(outcomes):
            cfg = get_config(preset, **overrides, seed=seed, campaign=name, runs_dir=str(C.runs_dir()))
            d = C.runs_dir() / cfg.run_id()
            records.write_json(d / "config.json", cfg.to_dict())
            records.write_json(d / "meta.json", {"run_id": cfg.run_id(), "git_commit": "abc123def4567890",
                                                 "git_dirty": False, "versions": {"python": "3.11", "torch": "2.13"},
                                                 "device": "cpu: test", "world_size": 1})
            val = out if isinstance(out, float) else None
            curve = [6.0, 5.0, val] if val else [6.0, math.nan]
            records.atomic_write(d / "metrics.jsonl", "".join(
                json.dumps({"step": 6 * i, "val_loss": v}) + "\n" for i, v in enumerate(curve)))
            status = "finished" if val else out
            records.write_json(d / "summary.json", {
                "run_id": cfg.run_id(), "status": status, "steps": 12, "final_val_loss": val,
                "best_val_loss": val or 6.0, "final_train_loss": val, "diverged_at": 3 if out == "diverged" else None,
                "wall_time_s": 1.0, "tokens_per_s": 1000.0 + seed, "max_sphere_drift": 0.0,
                "error": "RuntimeError: boom\ntraceback" if out == "failed" else None})
            rows.append({"arm": label, "seed": seed, "run_id": cfg.run_id(), "overrides": overrides})
    records.write_json(C.manifest_path(name, preset), {"campaign": name, "preset": preset, "base": {},
                                                       "notes": list(notes), "runs": rows})


def sweep(muon, adamw, extra=None):
    arms = {"muon lr=0.023": ({"optimizer": "muon", "lr": 0.023}, muon),
            "muon lr=0.1": ({"optimizer": "muon", "lr": 0.1}, ["diverged", 1.2, 1.3]),
            "adamw lr=0.004": ({"optimizer": "adamw", "adamw_lr": 0.004}, adamw),
            "adamw lr=0.008": ({"optimizer": "adamw", "adamw_lr": 0.008}, [1.70, 1.71, 1.72])}
    return arms | (extra or {})


def test_lr_sweep_report_beats(dirs):
    bad = {"adamw lr=10": ({"optimizer": "adamw", "adamw_lr": 10.0}, ["diverged", "failed"])}
    fake_campaign("lr_sweep", sweep([1.50, 1.51, 1.49], [1.60, 1.61, 1.59], bad))
    text = R.render_report("lr_sweep")
    assert text == (dirs / "reports" / "MUON_LR_SWEEP_REPORT.md").read_text()
    assert text.startswith("# Muon learning-rate sweep on nGPT\n\n**Question.**")
    # the diverged arm (muon lr=0.1, lower mean) must not win; the baseline is the best AdamW arm
    assert ("**Answer.** `muon lr=0.023` beats the baseline `adamw lr=0.004`: 1.5000 ± 0.0100 vs 1.6000 ± 0.0100 "
            "final val loss over 3 seeds, Welch p = ") in text
    for heading in ("## Success metric", "## Results", "## Diverged and failed runs", "## Environment"):
        assert heading in text
    assert "| arm " in text and "| muon lr=0.023 " in text and "final val (mean ± std)" in text
    assert "- adamw lr=10 seed 0 (`" in text and "diverged at step 3" in text and "failed: RuntimeError: boom" in text
    assert "abc123def456" in text and "cpu: test" in text and "preset: `smoke`" in text
    for png in ("lr_sweep_curves.png", "lr_sweep_sweep.png"):
        assert (dirs / "reports" / "figs" / png).stat().st_size > 1000
        assert f"](figs/{png})" in text
    first = (dirs / "reports" / "figs" / "lr_sweep_sweep.png").read_bytes()
    assert R.render_report("lr_sweep", "smoke") == text  # regenerable: same records, same bytes
    assert (dirs / "reports" / "figs" / "lr_sweep_sweep.png").read_bytes() == first


@pytest.mark.parametrize("muon, adamw, expect", [
    ([1.60, 1.50, 1.70], [1.61, 1.55, 1.68], "**Answer.** No significant difference between `muon lr=0.023` and "
                                             "the baseline `adamw lr=0.004` ("),
    ([1.80, 1.81, 1.79], [1.60, 1.61, 1.59], "**Answer.** `muon lr=0.023` loses to the baseline `adamw lr=0.004`"),
    ([1.50], [1.60], "not enough seeds for a test"),
])
def test_answer_sentences(dirs, muon, adamw, expect):
    fake_campaign("lr_sweep", sweep(muon, adamw))
    assert expect in R.render_report("lr_sweep")


def test_best_setting(dirs):
    assert C.best_setting("lr_sweep", "smoke", "lr", {"optimizer": "muon"}) is None  # never run
    fake_campaign("lr_sweep", sweep([1.50, 1.51, 1.49], [1.60, 1.61, 1.59]))
    assert C.best_setting("lr_sweep", "smoke", "lr", {"optimizer": "muon"}) == 0.023  # 0.1 had a diverged seed
    assert C.best_setting("lr_sweep", "smoke", "adamw_lr", {"optimizer": "adamw"}) == 0.004
    assert C.best_setting("lr_sweep", "cpu", "lr", {"optimizer": "muon"}) is None  # other preset


def test_advanced_and_geodesic_reports(dirs):
    adv = {a: ({"optimizer": "muon", **C.advanced_overrides(a, 0.1)}, vals) for a, vals in {
        "newton_schulz": [1.50, 1.51, 1.52], "weight_decay": [1.50, 1.52, 1.51], "cautious_wd": [1.40, 1.41, 1.42],
        "polar_express+normuon": [1.60, 1.62, 1.61]}.items()}
    fake_campaign("advanced", adv, notes=["muon lr = 0.02: the best muon arm of lr_sweep at preset smoke"])
    text = R.render_report("advanced")
    assert "**Answer.** `cautious_wd` beats the baseline `newton_schulz`" in text
    assert "- `cautious_wd` beats `weight_decay`" in text  # CWD compared with plain decay
    assert "## Settings taken from earlier campaigns" in text and "best muon arm of lr_sweep" in text
    geo = {"projection": ({"optimizer": "muon", "geodesic": "none"}, [1.5, 1.51]),
           "geodesic lr": ({"optimizer": "muon", "geodesic": "lr"}, [1.5, 1.52])}
    fake_campaign("geodesic", geo)
    assert "between `geodesic lr` and the baseline `projection`" in R.render_report("geodesic")
    assert (dirs / "reports" / "GEODESIC_MUON_REPORT.md").exists()


def test_verify_report_and_cli(dirs, capsys):
    fake_campaign("verify", {"muon lr=0.02": ({"optimizer": "muon"}, [5.3])})
    d = C.runs_dir() / C.results("verify", "smoke").run_id[0]
    records.atomic_write(d / "routing.md", "| name | optimizer |\n|---|---|\n| w | muon |\n")
    sv = {"min": 0.01, "median": 0.9, "max": 1.1, "signal_min": 0.7, "signal_max": 1.1}
    records.write_json(C.runs_dir() / "campaigns" / "verify-smoke.checks.json",
                       {"param": "w", "shape": [4, 4], "signal_dirs": 3, "dirs": 4, "gradient": sv,
                        "newton_schulz": sv, "polar_express": sv})
    assert main(["report", "verify"]) == 0
    out = capsys.readouterr().out
    assert "**Answer.** Yes: 1/1 Muon run(s) finished" in out and "3 of 4 singular directions" in out
    assert "[0.700, 1.100] with Newton-Schulz" in out
    assert "## Routing" in out and "| w | muon |" in out
    assert (dirs / "reports" / "VERIFY_REPORT.md").exists()
    assert (dirs / "reports" / "figs" / "verify_curves.png").exists()


def test_report_errors(dirs):
    with pytest.raises(ValueError, match="unknown report 'nope'"):
        R.render_report("nope")
    with pytest.raises(FileNotFoundError, match="no records of campaign geodesic"):
        R.render_report("geodesic")


def test_best_of_k_arms_is_bonferroni_adjusted():
    """Picking the best of k arms and testing it alone overstates the evidence: the verdict uses min(1, k p)."""
    import pandas as pd
    rows = [dict(arm=a, status="finished", final_val_loss=v) for a, vs in
            {"base": [1.000, 1.010, 1.005], "t": [0.992, 0.997, 0.987]}.items() for v in vs]
    df = pd.DataFrame(rows)
    p = R.welch(df, "t", "base")
    assert 0.025 < p < 0.05
    assert R.compare(df, "t", "base").startswith("`t` beats `base`")
    adjusted = R.compare(df, "t", "base", k=2)
    assert adjusted.startswith("no significant difference") and f"p = {min(1, 2 * p):.2g}" in adjusted
