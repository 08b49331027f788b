"""The architecture and width campaigns (issue 21) on a known synthetic loss surface (lab.executor._train faked):
interior picks, √2 grid extensions written as 3-significant-digit literals, confirm arms that the lab-wide family
finds, reports that render from partial records, and a slope of ln lr* on ln width that recovers the surface's."""
import math
from pathlib import Path

import pytest

from lab import campaign as C
from lab import executor as E
from lab import family, records
from lab import results as res
from lab.campaigns import architecture as A
from lab.campaigns import width as W
from lab.config import get_config
from lab.report import analyse, render_report

# the surface: loss = base + curvature x (ln(x / x*))^2 per tuned axis, + small effects, + a seed-and-cell wobble
MUON_LR = {"gpt_swiglu": 0.0163, "ngpt": 0.023, "gated_ngpt": 0.05}  # gated: past the grid's top (0.0325)
BASE = {("gpt_swiglu", "muon"): 1.60, ("ngpt", "muon"): 1.58, ("gated_ngpt", "muon"): 1.585,
        ("gpt_swiglu", "adamw"): 1.70, ("ngpt", "adamw"): 1.66, ("gated_ngpt", "adamw"): 1.69}
AUX, ADAMW_LR, PLAN_LR = 0.008, 0.0057, 0.023
K_MUON, K_ADAMW = -0.5, -1.0  # width: lr* = x* (w / 128)^k


def wobble(cfg) -> float:
    """A deterministic per-(seed, config) perturbation of a few millinats: seeds differ, no lr is exactly flat."""
    return 0.001 * math.sin(12.9898 * cfg.seed + 78.233 * math.log(cfg.lr if cfg.optimizer == "muon" else
                                                                     cfg.adamw_lr) + 3.1 * cfg.n_embd)


def surface(cfg) -> float:
    q = lambda x, best, c=0.2: c * math.log(x / best) ** 2
    if cfg.n_embd != get_config("smoke").n_embd:  # the width campaign
        r = cfg.n_embd / 128
        if cfg.optimizer == "muon":
            return 1.6 + q(cfg.lr, 0.023 * r ** K_MUON) + wobble(cfg)
        return 1.7 + q(cfg.adamw_lr, 0.008 * r ** K_ADAMW) + wobble(cfg)
    if cfg.model == "gated_ngpt" and cfg.project_every == 7:  # the plan's configuration
        if cfg.optimizer == "muon":
            return 1.59 + q(cfg.lr, PLAN_LR) + wobble(cfg)
        return 1.75 + q(cfg.adamw_lr, ADAMW_LR) + wobble(cfg)
    base = BASE[(cfg.model, cfg.optimizer)] + wobble(cfg)
    if cfg.optimizer == "muon":
        return base + q(cfg.lr, MUON_LR[cfg.model]) + q(cfg.scalar_lr, AUX, 0.1)
    return (base + q(cfg.adamw_lr, ADAMW_LR) + (0.01 if cfg.adam_betas[1] == 0.95 else 0.0)
            + (0.005 if cfg.warmup_frac == 0 else 0.0))


def fake_train(calls: list, stop_after: int | None = None):
    def train(cfg, progress=False):
        if stop_after is not None and len(calls) >= stop_after:
            raise KeyboardInterrupt  # the campaign is stopped here; the manifest keeps every row
        calls.append(cfg)
        d = Path(cfg.runs_dir) / cfg.run_id()
        loss = surface(cfg)
        records.write_json(d / "config.json", cfg.to_dict())
        s = {"run_id": cfg.run_id(), "status": "finished", "final_val_loss": loss, "best_val_loss": loss,
             "steps": cfg.steps}
        records.write_json(d / "summary.json", s)
        return s
    return train


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("LAB_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return tmp_path


def choices(name: str) -> dict:
    return {c["key"]: c for c in res.read_manifest(name, "smoke")["choices"]}


def test_sqrt2_steps_are_three_significant_digit_literals():
    assert [A.sig3(x) for x in (0.0325 * math.sqrt(2), 0.0115 / math.sqrt(2), 0.004 / math.sqrt(2))] == \
        [0.046, 0.00813, 0.00283]
    assert A.step_past([0.0115, 0.0163, 0.023, 0.0325], 0.0325) == 0.046
    assert A.step_past([0.0057, 0.008, 0.0113], 0.0057) == 0.00403
    assert A.step_past([0.004, 0.0057, 0.008], 0.008) == 0.0113   # the literal the lead's queue trains
    assert A.step_past([0.004, 0.0057, 0.008], 0.0057) is None


def test_architecture_picks_interior_optima_and_its_confirm_arms_are_the_familys(dirs, monkeypatch):
    calls = []
    monkeypatch.setattr(E, "_train", fake_train(calls))
    C.run_headless("architecture", "smoke")
    ch = choices("architecture")
    assert ch["muon@gpt_swiglu"]["value"] == {"lr": 0.0163, "aux": 0.008}
    assert ch["muon@ngpt"]["value"] == {"lr": 0.023, "aux": 0.008}
    # gated: 0.0325 won on the edge, so 0.046 was added, won again, then 0.0651: the pick is interior
    assert ch["muon@gated_ngpt"]["value"] == {"lr": 0.046, "aux": 0.008}
    gated_lrs = sorted({c["lr"] for c in ch["muon@gated_ngpt"]["grid"]})
    assert gated_lrs == [0.0115, 0.0163, 0.023, 0.0325, 0.046, 0.0651]
    for m in MUON_LR:
        assert ch[f"adamw@{m}"]["value"] == {"lr": 0.0057, "b2": 0.99, "warmup": 0.05}
        assert len(ch[f"adamw@{m}"]["grid"]) == 12  # the same trials as Muon's base grid (3 x 2 x 2)
    assert len(ch["muon@ngpt"]["grid"]) == 12 and len(ch["muon@gated_ngpt"]["grid"]) == 18  # 6 lrs x 3 aux
    assert ch["muon@plan"]["value"] == {"lr": 0.023}
    # the fit point: lr 0.046 at the picked aux (a run of its own where the grid did not reach it)
    df = res.results("architecture", "smoke")
    sel = df[df.stage == "select"]
    fit = res.select(sel, model="ngpt", optimizer="muon", aux=0.008)
    assert sorted({t["lr"] for t in fit.tags}) == [0.0115, 0.0163, 0.023, 0.0325, 0.046]
    # the overrides are the ones the lead trains from, and the plan's arms are its configuration
    conf = df[df.stage == "confirm"]
    assert sorted(conf.seed.unique()) == family.CONFIRM_SEEDS
    rows = [x for x in res.read_manifest("architecture", "smoke")["runs"] if x["stage"] == "confirm"]
    wanted = [{"model": m, "optimizer": o} for m in MUON_LR for o in ("muon", "adamw")]
    assert {str(x["tags"]) for x in rows} == {str(t) for t in [*wanted, {"arm": "plan_muon"}, {"arm": "plan_adamw"}]}
    over = {(x["tags"].get("model"), x["tags"].get("optimizer")): x["overrides"] for x in rows}
    assert over[("ngpt", "muon")] == {"optimizer": "muon", "lr": 0.023, "embed_lr": 0.008, "head_lr": 0.008,
                                      "scalar_lr": 0.008, "model": "ngpt"}
    assert over[("ngpt", "adamw")] == {"optimizer": "adamw", "adamw_lr": 0.0057, "adam_betas": [0.8, 0.99],
                                       "warmup_frac": 0.05, "model": "ngpt"}
    row = lambda **t: res.select(conf, **t).iloc[0]
    plan = row(arm="plan_adamw")
    assert (plan.model, plan.alpha_init, plan.project_every, plan.adamw_lr) == ("gated_ngpt", 0.15, 7, 5e-4)
    assert row(arm="plan_muon").lr == 0.023 and row(arm="plan_muon").scalar_lr == get_config("smoke").scalar_lr
    for c in family.of_campaign("architecture"):  # lab.family finds both arms (and both control arms) of each entry
        assert family.paired_of(c, df).n == len(family.CONFIRM_SEEDS), c.key
    # the report: the six arms, the interactions with verdicts, lr* per model, the ratio, the plan beside the lab's
    text = (dirs / "reports" / "smoke" / "ARCHITECTURE_REPORT.md").read_text()
    for needle in ("## Architecture x optimizer (confirmation seeds)", "Muon's advantage over AdamW is larger on ngpt",
                   "## Muon's optimal lr per architecture", "## The plan's configuration beside the lab's tuned one",
                   "not measured: one budget", "## Parameters and tuning effort", "THE control (run)",
                   "not run (ReLU², 4d MLP)", "lr 0.046, aux 0.008"):
        assert needle in text, needle
    r = analyse("architecture", "smoke")
    assert {j.verdict for j in r.judgements.values()} <= {"better", "worse", "equivalent", "inconclusive"}
    assert r.judgements["sphere_interaction_ngpt"].n == 6
    fit = A.lr_fit(A._muon_grid(r, r.stage("select"), "ngpt")[0])
    assert fit.convex and fit.inside and abs(math.log(fit.lr / 0.023)) < 0.1  # the surface's optimum
    rows = A.index_rows(r)
    assert len(rows) == 1 and rows[0]["hypothesis"] == A.LR_HYPOTHESIS
    assert rows[0]["verdict"].split()[0] in ("higher", "lower", "equivalent", "inconclusive")
    assert rows[0]["Δ [interval]"].startswith("lr* ratio 1.4")  # 0.023 / 0.0163
    n = len(calls)
    C.run_headless("architecture", "smoke")  # a rerun trains nothing
    assert len(calls) == n


def test_architecture_report_renders_from_partial_records(dirs, monkeypatch):
    calls = []
    monkeypatch.setattr(E, "_train", fake_train(calls, stop_after=30))
    with pytest.raises(KeyboardInterrupt):
        C.run_stages("architecture", C.check_params("architecture", {"preset": "smoke"}))
    text = render_report("architecture", "smoke")  # only part of the selection grid: nothing picked yet
    assert "Not measured yet on the confirmation seeds (30 of " in text
    assert "## Muon's optimal lr per architecture" in text and "| n/a " in text
    r = analyse("architecture", "smoke")
    assert A.index_rows(r)[0]["verdict"] == "not tested yet"  # fewer than 3 lrs of each grid have finished
    monkeypatch.setattr(E, "_train", fake_train(calls))
    C.run_headless("architecture", "smoke")  # resumes: the 30 finished runs are not trained again
    assert len({c.run_id() for c in calls}) == len(calls)
    for p in sorted((dirs / "runs" / "smoke").glob("*/summary.json"))[::3]:  # a third of the records gone
        p.unlink()
    text = render_report("architecture", "smoke")
    assert "## Architecture x optimizer (confirmation seeds)" in text and "not finished yet" in text


def test_width_recovers_the_slope_and_extends_past_winning_edges(dirs, monkeypatch):
    calls = []
    monkeypatch.setattr(E, "_train", fake_train(calls))
    C.run_headless("width", "smoke")
    widths = [c.n_embd for c in calls]
    first256 = widths.index(256)
    assert all(w == 256 for w in widths[first256:])  # the widest runs come last
    assert {(c.n_embd, c.n_head) for c in calls} == {(64, 2), (128, 4), (256, 8)}
    ch = choices("width")
    # AdamW's optimum moves as 1/width: at 64 it is 0.016 (the top edge), at 256 0.004 (the bottom): one √2 step
    # past each edge, and the pick is then interior
    assert sorted(ch["adamw_lr@ngpt/64"]["grid"]) == [0.004, 0.0057, 0.008, 0.0113, 0.016, 0.0226]
    assert sorted(ch["adamw_lr@ngpt/256"]["grid"]) == [0.00283, 0.004, 0.0057, 0.008, 0.0113, 0.016]
    assert ch["muon_lr@ngpt/128"]["value"] == 0.023 and len(ch["muon_lr@ngpt/128"]["grid"]) == 5
    r = analyse("width", "smoke")
    sl = W.slopes(r)
    e_m, e_a = sl[("ngpt", "muon")][0], sl[("ngpt", "adamw")][0]
    assert abs(e_m.k - K_MUON) < 0.05 and abs(e_a.k - K_ADAMW) < 0.05
    assert e_a.lo <= K_ADAMW <= e_a.hi or abs(e_a.hi - e_a.lo) < 0.05
    assert e_m.verdict(ref=0.0).verdict in ("lower", "inconclusive")  # k = -0.5 is not 0
    rows = W.index_rows(r)
    assert rows[0]["hypothesis"] == W.TRANSFER_HYPOTHESIS and rows[0]["Δ [interval]"].startswith("slope k -0.5")
    text = (dirs / "reports" / "smoke" / "WIDTH_REPORT.md").read_text()
    for needle in ("## Optimal lr per width (selection seeds)", "## Slope of ln lr* on ln width",
                   "## Final loss vs width (selection seeds)", "width_slope.png"):
        assert needle in text, needle


def test_width_with_the_gpt_stage_and_partial_records(dirs, monkeypatch):
    calls = []
    monkeypatch.setattr(E, "_train", fake_train(calls, stop_after=12))
    given = {"gpt": True, "widths": [64, 128], "muon_lrs": [0.0163, 0.023, 0.0325], "adamw_lrs": [0.008]}
    with pytest.raises(KeyboardInterrupt):
        C.run_headless("width", "smoke", **given)
    assert {c.model for c in calls} == {"ngpt", "gpt_swiglu"} and {c.n_embd for c in calls} == {64}
    tag = C.variant_tag("width", C.check_params("width", {**given, "preset": "smoke"}))
    text = render_report("width", "smoke", tag)  # width 128 not run yet: no slope, and it says so
    assert "Not measured yet: Muon's lr* is fitted at fewer than two widths" in text
    r = analyse("width", "smoke", tag)
    assert W.index_rows(r)[0]["verdict"] == "not tested yet"


@pytest.mark.parametrize("name, given, needle", [
    ("architecture", {"models": '["ngpt", "vit"]'}, r"unknown model\(s\) \['vit'\]"),
    ("architecture", {"adamw_beta2s": "[0.95, 1.5]"}, r"beta2 value\(s\) \[1.5\] outside"),
    ("architecture", {"plan_every": "0"}, r"plan_every=0 is refused"),
    ("width", {"widths": "[64, 100]"}, r"not multiples of the 32-dim heads"),
    ("width", {"widths": "[64]"}, r"at least two widths"),
])
def test_bad_parameters_are_refused_before_any_run(dirs, name, given, needle):
    with pytest.raises(ValueError, match=needle):
        C.check_params(name, {**given, "preset": "smoke"})
