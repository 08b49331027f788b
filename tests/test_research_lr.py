"""lr_sweep and horizon with the issue-20 design, on a known synthetic loss surface (training is faked: each run
writes its summary and a short val curve from the surface): the √2 grids and their extension, the picks, the
family's tags on horizon's confirmation arms, the token multiplier and the lr exponent recovered from the report,
and the 400-step runs shared by both campaigns."""
import json
import math
from pathlib import Path

import pytest

from lab import campaign as C
from lab import executor as E
from lab import family, records
from lab import report as R
from lab import results as res
from lab.campaigns import horizon, lr_sweep
from lab.campaigns.lr_sweep import ladder, nice, sqrt2_beyond, sqrt2_grid
from lab.config import get_config

PRESET = "cpu"  # nothing trains: the lab notebook's own preset, its default parameters and the family's budgets
L0 = {"muon": 1.5, "adamw": 1.6}  # final loss at 400 steps at the optimum; both fall as T^-0.1
K = {"muon": -1.0, "adamw": -0.5}  # lr* ∝ T^k


def lr_star(opt: str, steps: int) -> float:
    return {"muon": 0.023, "adamw": 0.008}[opt] * (steps / 400) ** K[opt]


BONUS = 1 - 0.004 - 0.002  # AdamW's loss factor at beta2 0.99 and 5% warmup (its tuned curve stays a power law)


def surface(cfg, lr_opt=lr_star) -> float:
    """Final val loss: a power law in steps, a parabola in ln lr around lr*(T), a factor below 1 for AdamW's beta2
    0.99 and 5% warmup, Muon's aux lr best at 0.016, and a small offset per (seed, optimizer)."""
    opt, t = cfg.optimizer, cfg.steps
    lr = cfg.lr if opt == "muon" else cfg.adamw_lr
    loss = L0[opt] * (t / 400) ** -0.1 + 0.5 * math.log(lr / lr_opt(opt, t)) ** 2
    if opt == "muon":
        loss += 0.05 * math.log(cfg.scalar_lr / 0.016) ** 2
    else:
        loss *= (1 - 0.004 * (cfg.adam_betas[1] == 0.99) - 0.002 * (cfg.warmup_frac == 0.05))
    return loss + 1e-3 * (cfg.seed * (3 if opt == "muon" else 5) % 11) / 11


def fake_training(monkeypatch, lr_opt=lr_star) -> list:
    calls = []

    def fake(cfg, progress=False):
        calls.append(cfg)
        final = surface(cfg, lr_opt)
        d = Path(cfg.runs_dir) / cfg.run_id()
        records.write_json(d / "config.json", cfg.to_dict())
        records.atomic_write(d / "metrics.jsonl", "".join(
            json.dumps({"step": s, "val_loss": final + 3.0 * (1 - s / cfg.steps) ** 2, "elapsed_s": float(s)}) + "\n"
            for s in range(0, cfg.steps + 1, max(1, cfg.steps // 4))))
        s = {"run_id": cfg.run_id(), "status": "finished", "steps": cfg.steps, "final_val_loss": final,
             "best_val_loss": final, "wall_time_s": 1.0, "tokens_per_s": 1.0}
        records.write_json(d / "summary.json", s)
        return s

    monkeypatch.setattr(E, "_train", fake)
    return calls


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("LAB_REPORTS_DIR", str(tmp_path / "reports"))
    return tmp_path


def run(name: str, **given):
    C.run_stages(name, C.check_params(name, {**given, "preset": PRESET}))


def test_sqrt2_ladders_are_the_queued_values():
    assert sqrt2_grid(0.023) == lr_sweep.PARAMS["muon_lrs"].default == [0.0115, 0.0163, 0.023, 0.0325, 0.046]
    assert sqrt2_grid(0.008) == lr_sweep.PARAMS["adamw_lrs"].default == [0.004, 0.0057, 0.008, 0.0113, 0.016]
    assert sqrt2_grid(0.092) == [0.046, 0.065, 0.092, 0.13, 0.184]
    assert sqrt2_grid(0.046) == [0.023, 0.0325, 0.046, 0.065, 0.092]
    assert sqrt2_grid(0.0115) == [0.00575, 0.0081, 0.0115, 0.0163, 0.023]
    assert [nice(x) for x in (0.06505, 0.016263, 0.005657, 0.032527, 0.0028284)] == [0.065, 0.0163, 0.0057, 0.0325,
                                                                                       0.0028]
    for c in (0.023, 0.008, 0.0115):  # every point within 1.2% of c·√2^k, anchors exact
        for k in range(-4, 5):
            assert ladder(c, k) == pytest.approx(c * math.sqrt(2) ** k, rel=0.012)
    beyond = sqrt2_beyond(0.023)
    g = sqrt2_grid(0.023)
    assert [beyond(None, g, x) for x in (0.0115, 0.023, 0.046)] == [0.0081, None, 0.065]
    assert beyond(None, [*g, 0.065], 0.065) == 0.092


def test_lr_sweep_picks_the_optimum_extends_by_sqrt2_and_renders(dirs, monkeypatch):
    """Muon's optimum beyond the grid's top (0.06): the grid grows by √2 twice (0.065, then 0.092) and picks 0.065,
    interior; AdamW's optimum 0.008 at beta2 0.99, 5% warmup; the aux lr 0.016 is the top edge, so 0.032 is tried."""
    shifted = lambda opt, t: 0.06 if opt == "muon" else lr_star(opt, t)
    fake_training(monkeypatch, shifted)
    run("lr_sweep")
    m = res.read_manifest("lr_sweep", PRESET)
    ch = {c["key"]: c for c in m["choices"]}
    assert ch["muon_lr"]["value"] == 0.065
    assert ch["muon_lr"]["grid"] == [0.0115, 0.0163, 0.023, 0.0325, 0.046, 0.065, 0.092]
    assert (ch["adamw_lr"]["value"], ch["adamw_beta2"]["value"], ch["adamw_warmup"]["value"]) == (0.008, 0.99, 0.05)
    assert ch["aux_lr"]["value"] == 0.016 and ch["aux_lr"]["grid"] == [0.004, 0.008, 0.016, 0.032]
    rows = {(r["stage"], r["arm"]) for r in m["runs"]}
    assert ("plan", "adamw lr=0.0005 beta2=0.95 warmup=0") in rows  # the plan's grid, exploratory
    adamw_select = {a for s, a in rows if s == "select" and a.startswith("adamw")}
    assert len(adamw_select) == 20  # 5 lrs x 2 beta2 x 2 warmups, every group's best interior
    conf = [r for r in m["runs"] if r["stage"] == "confirm"]
    assert {r["seed"] for r in conf} == set(family.CONFIRM_SEEDS)
    assert {r["arm"] for r in conf} == {"muon lr=0.065 aux=0.016", "adamw lr=0.008 beta2=0.99 warmup=0.05"}
    a = next(r for r in conf if r["arm"].startswith("adamw"))
    assert a["overrides"] == {"optimizer": "adamw", "adamw_lr": 0.008, "adam_betas": [0.8, 0.99],
                              "warmup_frac": 0.05}  # research-design.md's form (the queued runs' ids)
    assert a["tags"] == {"optimizer": "adamw", "budget": 400, "lr": 0.008, "beta2": 0.99, "warmup": 0.05}
    text = R.render_report("lr_sweep", PRESET)
    assert "Tuning effort on selection seeds 0, 1: Muon 10 configurations (7 lrs, then 4 aux lrs; a configuration " \
           "in both counts once), AdamW 20" in text
    assert "6 of 6 confirmation seeds finished" in text and "Grid edge" not in text
    cfg = lambda o, seed: get_config(PRESET, **o, seed=seed)
    d = sum(surface(cfg(conf[0]["overrides"] if conf[0]["arm"].startswith("muon") else conf[-1]["overrides"], s),
                    shifted) - surface(cfg(a["overrides"], s), shifted) for s in family.CONFIRM_SEEDS) / 6
    assert f"Δ = {d:+.4f} [" in text and f"it moved by {d - lr_sweep.OLD_GAP:+.4f}" in text
    assert "## AdamW's tuning grid" in text and "## The research plan's coarse grid" in text
    for png in ("lr_sweep_sweep.png", "lr_sweep_curves.png"):
        assert (dirs / "reports" / "figs" / png).stat().st_size > 1000


def test_horizon_tags_speedup_lr_law_and_shared_400_step_runs(dirs, monkeypatch):
    calls = fake_training(monkeypatch)
    run("lr_sweep")
    sweep = res.read_manifest("lr_sweep", PRESET)
    calls.clear()
    run("horizon")
    assert not [c for c in calls if c.steps == 400]  # the 400-step arms are lr_sweep's runs: nothing retrained
    m = res.read_manifest("horizon", PRESET)
    ids = lambda man, **kw: {r["run_id"] for r in man["runs"] if all(r["tags"].get(k) == v for k, v in kw.items())}
    at400 = ids(m, budget=400)
    assert at400 <= {r["run_id"] for r in sweep["runs"] if r["stage"] != "plan"}  # horizon@400 ⊆ lr_sweep
    conf = lambda man: {r["run_id"] for r in man["runs"] if r["stage"] == "confirm"}
    assert conf(m) & at400 == conf(sweep)  # the same confirmation runs: the family judges them once
    ch = {c["key"]: c["value"] for c in m["choices"]}
    for b in family.BUDGETS:  # the optimum of the surface at every budget, interior
        assert ch[f"muon_lr@{b}"] == {100: 0.092, 200: 0.046, 400: 0.023, 800: 0.0115}[b]
        assert ch[f"adamw_lr@{b}"] == {100: 0.016, 200: 0.0113, 400: 0.008, 800: 0.0057}[b]
        assert (ch[f"adamw_beta2@{b}"], ch[f"adamw_warmup@{b}"], ch[f"aux_lr@{b}"]) == (0.99, 0.05, 0.016)
    assert ch["adamw_beta2"] == 0.99 and ch["adamw_warmup"] == 0.05  # read from lr_sweep (upstream)
    df = res.results("horizon", PRESET)
    for b in family.BUDGETS:  # the family's entries find their arms by the tags {optimizer, budget}
        assert family.paired_of(family.entry(f"muon_vs_adamw@{b}"), df).n == 6
    judged = family.judge_all(PRESET)
    assert judged["muon_vs_adamw@400"].verdict == "better" and judged["muon_vs_adamw@400"].n == 6

    r = R.analyse("horizon", PRESET)
    ms, why = horizon.multipliers(r)
    expect = (L0["adamw"] * BONUS / L0["muon"]) ** 10  # AdamW's T^-0.1 law reaches Muon's loss at 1.8 T
    assert not why and [m.censored for m in ms] == ["", "", "", ">"]  # 800 steps: past AdamW's largest budget
    for m in ms[:3]:
        assert m.ratio == pytest.approx(expect, rel=0.02) and m.lo <= m.ratio <= m.hi
    fits = horizon.lr_fits(r)
    assert fits["muon"]["exponent"].k == pytest.approx(K["muon"], abs=0.02)
    assert fits["adamw"]["exponent"].k == pytest.approx(K["adamw"], abs=0.03)
    for b in family.BUDGETS:
        assert fits["muon"]["fits"][b].lr == pytest.approx(lr_star("muon", b), rel=0.02)
    law = horizon.lr_law(r)
    assert law["muon"].startswith("k = -1.00 [") and "k = -1 (lr·T constant) lies inside" in law["muon"]
    assert "published -0.32 (HyperP) outside" in law["adamw"]
    rows = horizon.speedup_rows(r)
    assert [x["budget"] for x in rows] == ["100 steps", "200 steps", "400 steps", "800 steps"]
    assert rows[0]["token multiplier [interval]"].startswith(f"{ms[0].ratio:.2f}x [")
    assert rows[3]["token multiplier [interval]"].startswith("> 1.64M tokens")
    idx = horizon.index_rows(r)
    assert len(idx) == 2 and "speedup" in idx[0]["hypothesis"] and "Muon k = -1.00" in idx[1]["Δ [interval]"]

    text = R.render_report("horizon", PRESET)
    assert "## Speedup: AdamW tokens to reach Muon's final loss" in text and "## The lr law" in text
    assert f"over Muon's tokens; read off AdamW's tuned final-loss-vs-budget curve): 0.2M: {ms[0].ratio:.2f}x [" \
        in text and "1.6M: > 1.64M tokens (> 1.00x), past the largest budget measured" in text
    assert "- Muon: k = -1.00 [" in text and "- AdamW: k = -0.50 [" in text
    assert "Tuning effort per budget (configurations on the selection seeds, Muon / AdamW): 100: 8 / 8" in text
    assert "steps to target" not in text.lower() and "Every lr pick is interior to its grid." in text
    for png in ("horizon_curves.png", "horizon_speedup.png", "horizon_lr_law.png"):
        assert (dirs / "reports" / "figs" / png).stat().st_size > 1000
    assert R.render_report("horizon", PRESET) == text  # regenerable: same records, same bytes


def test_reports_render_while_most_confirmation_runs_are_pending(dirs, monkeypatch):
    """With the new defaults most confirmation runs do not exist yet: the reports say how many seeds are pending."""
    fake_training(monkeypatch)
    run("lr_sweep")
    run("horizon")
    for p in (res.runs_dir(PRESET)).glob("*/summary.json"):
        s = records.read_json(p)
        if s["steps"] != 400 and json.loads((p.parent / "config.json").read_text())["seed"] >= 101:
            p.unlink()  # confirmation seeds 101-105 of every other budget "not trained yet"
    text = R.render_report("horizon", PRESET)
    assert "1 of 6 confirmation seeds finished, 5 pending" in text and "Still pending: 100 steps" in text
    rows = horizon.speedup_rows(R.analyse("horizon", PRESET))
    assert [x["seeds"] for x in rows] == ["1 of 6 confirmation seeds finished, 5 pending"] * 2 + [
        "6 of 6 confirmation seeds finished", "1 of 6 confirmation seeds finished, 5 pending"]
    for p in (res.runs_dir(PRESET)).glob("*/summary.json"):
        if json.loads((p.parent / "config.json").read_text())["seed"] >= 100:
            p.unlink()
    assert "0 of 6 confirmation seeds finished, 6 pending" in R.render_report("lr_sweep", PRESET)
    text = R.render_report("horizon", PRESET)
    assert "Not measured yet on the confirmation seeds" in text and "Speedup: not measurable yet" in text


def test_horizon_refuses_a_budget_without_a_grid_centre():
    with pytest.raises(ValueError, match=r"muon_centers=.* has no lr for budget\(s\) \[50\]"):
        C.check_params("horizon", {"preset": PRESET, "budgets": [50, 100]})
    with pytest.raises(ValueError, match=r"adamw_warmup=2.0 must be in \[0, 1\), or -1"):
        C.check_params("horizon", {"preset": PRESET, "adamw_warmup": 2})
