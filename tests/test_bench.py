"""The benchmarks at `--size tiny`, so their code cannot rot. No timing assertions: only that each section runs,
writes its tables, plots and ratios, and that tiny runs never touch reports/BENCHMARKS.md."""
import json
import math
import re

import pytest
import torch

from lab import bench, records
from lab.cli import main
from lab.config import get_config

SECTIONS = ["## 1. Orthogonalization", "## 2. Optimizer step overhead", "## 3. Training loop overhead",
            "## 4. Sample efficiency", "## 5. CUDA"]
FIGS = ["bench_scalar_maps.png", "bench_ortho_tradeoff.png", "bench_optimizer.png", "bench_sample_efficiency.png"]


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    nxt = text.find("\n## ", start + 1)
    return text[start:nxt if nxt > 0 else None]


def _headline_numbers(section: str) -> list[float]:
    line = next(ln for ln in section.splitlines() if ln.startswith("**Headline:**"))
    return [float(x) for x in re.findall(r"\*\*([-+0-9.eE]+|nan)x?\*\*", line)]


def test_all_benchmarks_tiny(dirs):
    real = bench.ROOT / "reports" / "BENCHMARKS.md"
    before = real.stat().st_mtime_ns if real.exists() else None
    assert main(["bench", "--size", "tiny"]) == 0
    report = dirs / "reports" / "BENCHMARKS.md"
    text = report.read_text()
    for h in SECTIONS:
        assert h in text
    assert "how to rerun" in text.lower() and "make bench" in text
    for key in ("git commit", "device", "torch / triton", "torch threads", "Wall time per section"):
        assert key in text
    for f in FIGS:
        png = dirs / "reports" / "figs" / f
        assert png.exists() and png.read_bytes()[:4] == b"\x89PNG"
        assert f"figs/{f}" in text

    ortho = _section(text, SECTIONS[0])
    nums = _headline_numbers(ortho)
    assert len(nums) == 3 and all(math.isfinite(x) and x > 0 for x in nums)  # dist ratios and cost ratio
    assert "| shape" in ortho and "x AdamW" in ortho and "gauss dist" in ortho and "ill dist" in ortho
    opt = _section(text, SECTIONS[1])
    nums = _headline_numbers(opt)
    assert len(nums) == 2 and all(math.isfinite(x) and x > 0 for x in nums)
    for arm in ("AdamW (baseline, all params)", "Muon NS5 + AdamW", "Muon PE5 + AdamW", "NorMuon NS5 + AdamW",
                "torch.optim.Muon + AdamW"):
        assert arm in opt
    assert "state bytes / param byte" in opt
    loop = _section(text, SECTIONS[2])
    (ratio,) = _headline_numbers(loop)
    assert math.isfinite(ratio) and ratio > 0
    assert "| True" in loop  # the bare loop computes exactly what lab.train computes
    se = _section(text, SECTIONS[3])
    assert "own grid" in se and "fraction" in se and len(_headline_numbers(se)) == 1
    cuda = _section(text, SECTIONS[4])
    if not torch.cuda.is_available():
        assert "skipped: no CUDA" in cuda

    # a subset replaces only its own sections
    bench.run_benchmarks(["cuda"], size="tiny")
    again = report.read_text()
    assert _section(again, SECTIONS[0]) == ortho and _section(again, SECTIONS[2]) == loop
    assert (real.stat().st_mtime_ns if real.exists() else None) == before  # reports/BENCHMARKS.md untouched


def test_tiny_never_writes_the_real_report(monkeypatch):
    monkeypatch.delenv("LAB_REPORTS_DIR", raising=False)
    monkeypatch.delenv("LAB_RUNS_DIR", raising=False)
    path = bench.run_benchmarks(["cuda"], size="tiny")
    assert path.exists() and bench.ROOT / "reports" not in path.parents


def test_unknown_benchmark_is_refused(dirs):
    with pytest.raises(ValueError, match="valid: orthogonalization"):
        bench.run_benchmarks(["nope"], size="tiny")
    assert main(["bench", "nope", "--size", "tiny"]) == 2


def test_steps_to_target():
    curve = [(0, 6.0), (6, 4.8), (12, 4.5)]
    assert bench.steps_to_target(curve, 5.0) == pytest.approx(5.0)  # 0 + 6 * (6 - 5) / (6 - 4.8)
    assert bench.steps_to_target(curve, 4.5) == pytest.approx(12.0)
    assert bench.steps_to_target(curve, 7.0) == 0.0
    assert math.isnan(bench.steps_to_target(curve, 4.0))
    assert math.isnan(bench.steps_to_target([(0, 6.0), (6, math.nan)], 5.0))


def _fake_run(runs, preset, overrides, seed, curve, campaign="lr_sweep"):
    cfg = get_config(preset, **overrides, seed=seed, campaign=campaign, runs_dir=str(runs))
    d = runs / cfg.run_id()
    records.write_json(d / "config.json", cfg.to_dict())
    records.atomic_write(d / "metrics.jsonl", "".join(json.dumps({"step": s, "val_loss": v}) + "\n" for s, v in curve))
    records.write_json(d / "summary.json", {"run_id": cfg.run_id(), "status": "finished", "steps": curve[-1][0],
                                            "final_val_loss": curve[-1][1], "best_val_loss": min(v for _, v in curve)})
    return {"seed": seed, "run_id": cfg.run_id(), "overrides": overrides}


def test_sample_efficiency_reads_campaign_records(dirs):
    """With an lr_sweep manifest present, the best Muon arm is compared with the best AdamW arm, seed by seed."""
    runs = dirs / "runs"
    arms = {
        "muon lr=0.02": ({"optimizer": "muon", "lr": 0.02}, [[(0, 6.0), (6, 4.8), (12, 4.5)],
                                                             [(0, 6.0), (6, 5.5), (12, 4.6)]]),
        "muon lr=0.1": ({"optimizer": "muon", "lr": 0.1}, [[(0, 6.0), (6, 5.9), (12, 5.8)]] * 2),
        "adamw lr=0.008": ({"optimizer": "adamw", "adamw_lr": 0.008}, [[(0, 6.0), (6, 5.4), (12, 5.0)]] * 2),
        "adamw lr=0.002": ({"optimizer": "adamw", "adamw_lr": 0.002}, [[(0, 6.0), (6, 5.7), (12, 5.3)]] * 2),
    }
    rows = []
    for label, (overrides, curves) in arms.items():
        for seed, curve in enumerate(curves):
            rows.append({"arm": label, **_fake_run(runs, "smoke", overrides, seed, curve)})
    records.write_json(runs / "campaigns" / "lr_sweep-smoke.json",
                       {"campaign": "lr_sweep", "preset": "smoke", "base": {}, "notes": [], "runs": rows})
    out = dirs / "reports"
    (out / "figs").mkdir(parents=True)
    ctx = bench.Ctx(size="tiny", p=bench.SIZES["tiny"], figs=out / "figs", runs=runs, dev=torch.device("cpu"))
    body = bench.bench_sample_efficiency(ctx)
    assert "campaign records" in body and "`muon lr=0.02`" in body and "`adamw lr=0.008`" in body
    # seed 0: 5.0 reached at step 5 -> 5/12; seed 1: 6 + 6 * (5.5 - 5.0) / (5.5 - 4.6) = 9.33 -> 0.778
    expected = (5.0 / 12 + (6 + 6 * 0.5 / 0.9) / 12) / 2
    assert _headline_numbers(body) == [pytest.approx(expected, abs=1e-3)]

    # a sweep still running (a run without a final summary) is not read: its best arm would mean nothing
    rows.append({"arm": "muon lr=0.3", "seed": 0, "run_id": "notfinished0", "overrides": {"optimizer": "muon",
                                                                                          "lr": 0.3}})
    records.write_json(runs / "campaigns" / "lr_sweep-smoke.json",
                       {"campaign": "lr_sweep", "preset": "smoke", "base": {}, "notes": [], "runs": rows})
    body = bench.bench_sample_efficiency(ctx)
    assert "own grid" in body and "incomplete (8 of 9 runs final)" in body
