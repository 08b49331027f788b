"""The sphere campaigns (advanced, geodesic, lazy_projection) at their default parameters (issue 20's design), on fake
training: a synthetic loss surface with a known optimum per arm, so every stage's pick is known in advance. Their
confirm arms carry the tags of lab/family.py's entries (each entry finds both arms on all six seeds), their reports
render from partial and from old-format records, and lab.plan lists exactly the runs a campaign would train."""
import json
import math
import shutil
from pathlib import Path

import pytest

from lab import campaign as C
from lab import executor as E
from lab import family, plan, records
from lab import results as res
from lab.campaigns import _sphere
from lab.report import render_report

ROOT = Path(__file__).resolve().parent.parent
SMOKE_LR = 0.02  # the smoke preset's Muon lr: tuned() falls back to it without lr_sweep records


def loss_of(cfg) -> float:
    """A parabola in log2(lr) around each arm's optimum, features shifting it, and a small deterministic seed
    effect shared by all arms (so pairs by seed are tight, as in the lab)."""
    every = cfg.project_every
    if cfg.optimizer == "adamw":
        best, floor, lr = (0.0113 if every == 7 else 0.008), 1.70 + 0.004 * (every > 1), cfg.adamw_lr
    else:
        best, floor, lr = 0.023, 1.58, cfg.lr
        if cfg.normuon:
            best = 0.046                 # past the top of NorMuon's grid: extended twice, picked inside
        if cfg.geodesic == "lr":
            best, floor = 2 * SMOKE_LR, 1.575  # the top of its factor-2 grid around 0.02: extended once
        if cfg.geodesic == "lr_norm":
            best = SMOKE_LR
        if cfg.campaign == "geodesic" and cfg.geodesic == "none" and cfg.lr == SMOKE_LR / 2:
            floor = 1.54                 # projection's best lr is its lowest grid value: extended
        if every == 7:
            best, floor = 0.0163, 1.57   # lazier Muon wants a smaller lr (the lowest grid value: extended)
        if every == 3:
            floor = 1.575
        if cfg.cautious_wd:
            floor -= 0.01 * cfg.weight_decay  # cautious decay at 1.0 beats it at 0.1
        if cfg.orthogonalizer == "polar_express":
            floor -= 0.003
    seed = 0.004 * math.sin(cfg.seed + 1.0)
    return floor + 0.02 * math.log2(lr / best) ** 2 + seed + 1e-3 * math.cos(7.0 * cfg.seed + 100 * lr)


def fake_train(cfg, progress=False) -> dict:
    run_dir = Path(cfg.runs_dir) / cfg.run_id()
    loss = loss_of(cfg)
    metrics = "".join(json.dumps({"step": s, "val_loss": loss + 0.5 * (1 - s / cfg.steps)}) + "\n"
                      for s in range(0, cfg.steps + 1, max(1, cfg.steps // 4)))
    records.atomic_write(run_dir / "metrics.jsonl", metrics)
    s = {"run_id": cfg.run_id(), "status": "finished", "campaign": cfg.campaign, "steps": cfg.steps,
         "final_val_loss": loss, "best_val_loss": loss, "diverged_at": None, "wall_time_s": 1.0,
         "tokens_per_s": 1000.0, "max_sphere_drift": 0.1 * cfg.project_every ** 0.9,
         "max_geodesic_drift": 2e-7 if cfg.geodesic != "none" else None, "error": None}
    records.write_json(run_dir / "summary.json", s)
    return s


@pytest.fixture
def fake(dirs, monkeypatch):
    monkeypatch.setattr(E, "_train", fake_train)
    return dirs


def run(name: str) -> tuple[dict, object]:
    """Run a campaign at its defaults (smoke preset, fake training) and render its report: (manifest, results)."""
    C.run_headless(name, "smoke")
    m = res.read_manifest(name, "smoke")
    return m, res.results(name, "smoke", m=m)


def choices(m: dict) -> dict:
    return {c["key"]: c for c in m["choices"]}


def check_family(name: str, df) -> None:
    """Every family entry of the campaign finds its arms on the confirm stage, on all six confirmation seeds."""
    entries = family.of_campaign(name)
    assert entries
    for c in entries:
        p = family.paired_of(c, df)
        assert p.seeds == family.CONFIRM_SEEDS, (c.key, p.seeds)


def report_text(name: str) -> str:
    """The rendered report; verdict words only in the family's table and sentences, never on exploratory rows."""
    text = (res.reports_dir("smoke") / C.campaigns.get(name).REPORT).read_text()
    answer = text.split("**Answer", 1)[1].split("\n", 1)[0]
    explore = text.split("## Exploratory comparisons", 1)[1].split("\n## ", 1)[0]
    assert "## Confirmatory comparisons (the lab-wide family)" in text and f"{name}_forest.png" in text
    table = "\n".join(x for x in explore.splitlines() if x.startswith("|"))
    assert table and not any(w in table for w in ("verdict", "significant", "wins", "loses"))
    assert "significant" not in answer
    assert answer.count("(the plan expected: ") == len(family.of_campaign(name))
    return text


def test_sqrt2_ladder_extends_onto_its_own_rounded_values():
    assert _sphere.beyond_sqrt2([0.0163, 0.023, 0.0325], 0.0325) == 0.046
    assert _sphere.beyond_sqrt2([0.0163, 0.023, 0.0325, 0.046], 0.046) == 0.065
    assert _sphere.beyond_sqrt2([0.0163, 0.023, 0.0325], 0.0163) == 0.0115
    assert _sphere.beyond_sqrt2([0.0057, 0.008, 0.0113], 0.0113) == 0.016
    assert _sphere.beyond_sqrt2([0.0057, 0.008, 0.0113], 0.0057) == 0.004
    assert _sphere.beyond_sqrt2([0.0057, 0.008, 0.0113], 0.008) is None
    assert _sphere.beyond_sqrt2([0.0057, 0.008, 0.0113], None) is None


def test_defaults_are_the_issue_20_design():
    from lab import params
    d = {n: params.defaults(C.campaigns.get(n)) for n in ("advanced", "geodesic", "lazy_projection")}
    for p in d.values():
        assert p["seeds"] == [0, 1] and p["confirm_seeds"] == family.CONFIRM_SEEDS == [100, 101, 102, 103, 104, 105]
    assert d["advanced"]["normuon_lrs"] == [0.0163, 0.023, 0.0325]
    assert tuple(d["advanced"]["weight_decays"]) == family.WEIGHT_DECAYS == (0.1, 1.0)
    assert d["geodesic"]["modes"] == ["lr", "lr_norm"]
    lp = d["lazy_projection"]
    assert lp["muon_every"] == [1, 3, 7] and lp["adamw_every"] == [1, 7] and lp["frequencies"] == [1, 3, 7, 10, 20]
    assert lp["muon_lrs"] == [0.0163, 0.023, 0.0325] and lp["adamw_lrs"] == [0.0057, 0.008, 0.0113]
    with pytest.raises(ValueError, match="muon_every=.* must include 1"):
        C.check_params("lazy_projection", {"preset": "smoke", "muon_every": [3, 7]})
    with pytest.raises(ValueError, match=r"weight_decays=\[0.0, 1.0\] must all be > 0"):
        C.check_params("advanced", {"preset": "smoke", "weight_decays": [0.0, 1.0]})


def test_advanced(fake):
    m, df = run("advanced")
    ch = choices(m)
    assert ch["muon_lr"]["value"] == SMOKE_LR  # no lr_sweep records at smoke: the preset default
    assert ch["normuon_lr"]["value"] == 0.046 and ch["normuon_lr"]["grid"] == [0.0163, 0.023, 0.0325, 0.046, 0.065]
    assert ch["cautious_wd"]["value"] == 1.0 and ch["cautious_wd"]["grid"] == [0.1, 1.0]
    conf = df[df.stage == "confirm"]
    tags = {a: conf[conf.arm == a].tags.iloc[0] for a in dict.fromkeys(conf.arm)}
    assert set(tags) == {"newton_schulz", "polar_express", "normuon lr=0.046", "weight_decay wd=0.1",
                         "cautious_wd wd=0.1", "weight_decay wd=1", "cautious_wd wd=1"}
    assert [a for a, t in tags.items() if t.get("best")] == ["cautious_wd wd=1"]
    assert {r["stage"] for r in m["runs"]} == {"select", "decay", "normuon_lr", "confirm"}
    over = {r["arm"]: r["overrides"] for r in m["runs"] if r["stage"] == "confirm" and r["seed"] == 100}
    muon = {"optimizer": "muon", "lr": SMOKE_LR, "embed_lr": 0.008, "head_lr": 0.008, "scalar_lr": 0.008}
    assert over["newton_schulz"] == muon  # the design's form: nothing but the feature on top of tuned Muon
    assert over["cautious_wd wd=1"] == {**muon, "cautious_wd": True, "weight_decay": 1.0}
    assert over["normuon lr=0.046"] == {**muon, "lr": 0.046, "normuon": True}
    check_family("advanced", df)
    text = report_text("advanced")
    assert "## What weight decay does on the sphere" in text and "first-order no-op" in text
    assert "| 1 | 0.0200 | 1.0204 |" in text  # lr·wd and the step rescale at wd 1.0
    assert text.count("the plan expected: \"NorMuon + Polar Express achieve best results\"") == 2
    assert "## Tuning effort per arm family" in text and "| NorMuon " in text
    assert "figs/advanced_features.png" in text and "confirmation seeds 100–105" in text


def test_geodesic(fake):
    m, df = run("geodesic")
    ch = choices(m)
    assert ch["lr[lr]"]["value"] == 2 * SMOKE_LR and ch["lr[lr]"]["grid"] == [0.01, 0.02, 0.04, 0.08]
    assert ch["lr[lr_norm]"]["value"] == SMOKE_LR and ch["lr[none]"]["value"] == 0.01
    assert ch["lr[none]"]["grid"] == [0.005, 0.01, 0.02, 0.04]
    conf = df[df.stage == "confirm"]
    assert set(conf.arm) == {"projection lr=0.01", "geodesic lr lr=0.04", "geodesic lr_norm lr=0.02"}
    check_family("geodesic", df)
    text = report_text("geodesic")
    assert text.count("(the plan expected: \"geodesic: 1-3% improvement\")") == 2
    assert "max | ‖w‖ − 1 | after any step" in text and "would be Δ between" in text


def test_lazy_projection(fake):
    m, df = run("lazy_projection")
    ch = choices(m)
    assert ch["lr[muon@7]"]["value"] == 0.0163 and ch["lr[muon@7]"]["grid"] == [0.0115, 0.0163, 0.023, 0.0325]
    assert ch["lr[muon@1]"]["value"] == ch["lr[muon@3]"]["value"] == 0.023
    assert ch["lr[adamw@7]"]["value"] == 0.0113 and ch["lr[adamw@7]"]["grid"] == [0.0057, 0.008, 0.0113, 0.016]
    assert ch["lr[adamw@1]"]["value"] == 0.008
    conf = df[df.stage == "confirm"]
    assert set(conf.arm) == {"muon every=1 lr=0.023", "muon every=3 lr=0.023", "muon every=7 lr=0.0163",
                             "adamw every=1 lr=0.008", "adamw every=7 lr=0.0113"}
    assert len(df[df.stage == "select"].arm.unique()) == 10  # the exploratory fixed-lr stage is kept
    check_family("lazy_projection", df)
    text = report_text("lazy_projection")
    assert "## Row-norm drift before projection" in text and "| adamw       |      20 |" in text
    assert "figs/lazy_projection_adamw.png" in text and "against `adamw every=1 lr=0.008` paired by seed" in text
    assert "Adam with lazy projection: optimal freq = 7" in text


@pytest.mark.parametrize("name", ["advanced", "geodesic", "lazy_projection"])
def test_reports_render_from_partial_records(fake, name):
    m, df = run(name)
    for r in m["runs"]:  # no confirmation yet, half of every selection stage unfinished
        if r["stage"] == "confirm" or r["seed"] == 1:
            (res.runs_dir("smoke") / r["run_id"] / "summary.json").unlink(missing_ok=True)
    text = render_report(name, "smoke")
    assert "not measured yet on the confirmation seeds" in text and "## Diverged, failed and unfinished runs" in text
    for r in m["runs"]:  # nothing finished at all
        (res.runs_dir("smoke") / r["run_id"] / "summary.json").unlink(missing_ok=True)
    assert render_report(name, "smoke").startswith("# ")


@pytest.mark.parametrize("name", ["advanced", "geodesic", "lazy_projection"])
def test_reports_render_from_the_committed_manifests_without_their_runs(dirs, name):
    """The manifests written before this design (other stages, tags without lr or wd), with no run records."""
    src = ROOT / "runs" / "cpu" / "campaigns" / f"{name}.json"
    dst = res.manifest_path(name, "cpu")
    dst.parent.mkdir(parents=True)
    shutil.copy(src, dst)
    assert render_report(name, "cpu").startswith("# ")


@pytest.mark.parametrize("name", ["advanced", "geodesic", "lazy_projection"])
def test_plan_lists_what_the_campaign_trains(fake, name):
    """Before any run, lab.plan lists the campaign's first stages as needed now and the rest as waiting on picks;
    after the campaign, it lists nothing; with runs gone, exactly those, as `lab run` lines with the same ids."""
    now, later, pending = plan.needed(name, "smoke")
    assert now and later and pending
    m, _ = run(name)
    ids = {r["run_id"] for r in m["runs"]}
    assert {r["run_id"] for r in now} <= ids and plan.needed(name, "smoke") == ([], [], [])
    outcome = plan.outcomes(name, "smoke")
    assert len(outcome) == 1 and {r["run_id"] for r in outcome[0].rows.values()} == ids  # the same runs
    gone = [r for r in m["runs"] if r["stage"] == "confirm" and r["seed"] == 104]
    for r in gone:
        (res.runs_dir("smoke") / r["run_id"] / "summary.json").unlink()
    now, later, pending = plan.needed(name, "smoke")
    assert sorted(r["run_id"] for r in now) == sorted({r["run_id"] for r in gone}) and not later and not pending
    text, counts = plan.report([name], "smoke")
    lines = [x for x in text.splitlines() if x.startswith("python -m lab run --preset smoke ")]
    assert len(lines) == counts[name] == len({r["run_id"] for r in gone}) and all(" seed=104" in x for x in lines)
