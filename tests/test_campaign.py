"""Campaigns at the smoke preset: notebooks through papermill, parameter checks before any work, stages with
selection and confirmation seeds, reuse, divergence, resume, runs held by another process, variants."""
import math
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from lab import arms, campaigns, params, records
from lab import campaign as C
from lab import executor as E
from lab import results as res
from lab.campaigns.lr_sweep import tuned
from lab.grid import Grid

sys.path.insert(0, str(C.NOTEBOOKS))
import make_notebooks  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
S = {"steps": "6"}  # smoke runs of 6 steps (val at 0, 6): strings, as the CLI and plain papermill pass them
TUNED = {"lr": 0.02, "aux_lr": 0.008, "adamw_lr": 0.008}
GRIDS = {  # the smallest grids that still exercise every stage
    "verify": S,
    "lr_sweep": {**S, "seeds": "[0, 1]", "confirm_seeds": "100, 101", "muon_lrs": "[0.02]",
                 "adamw_lrs": "0.008, 10", "aux_lrs": "[0.004, 0.008]", "plan_muon_lrs": "[]",
                 "plan_adamw_lrs": "[]", "adamw_beta2s": "[0.95]", "warmup_fracs": "[0]"},  # adamw lr=10 diverges
    "horizon": {"seeds": [0], "confirm_seeds": [100, 101], "budgets": [6, 12], "grid_points": 3,
                "muon_centers": {"6": 0.02, "12": 0.02}, "adamw_centers": {"6": 0.008, "12": 0.008},
                "aux_lrs": [0.008], "adamw_beta2s": [0.95], "warmup_fracs": [0.0], "adamw_beta2": 0.95,
                "adamw_warmup": 0.0},
    "geodesic": {**S, "seeds": [0, 1], "confirm_seeds": [100, 101], "modes": ["lr"], "lr": 0.02, "aux_lr": 0.008},
    "advanced": {**S, "seeds": [0, 1], "confirm_seeds": [100, 101], "arms": ["newton_schulz", "cautious_wd"],
                 "weight_decays": [0.1], "normuon_lrs": [0.02], "lr": 0.02, "aux_lr": 0.008},
    "lazy_projection": {**S, "seeds": [0, 1], "confirm_seeds": [100, 101], "frequencies": [1, 3],
                        "muon_every": [1, 3], "adamw_every": [1, 3], "muon_lrs": [0.02], "adamw_lrs": [0.008],
                        "devices": ["cpu", "cpu"], **TUNED},
}
REPORT = {n: campaigns.get(n).REPORT.removesuffix(".md") for n in GRIDS}


def use_dirs(mp, root: Path) -> Path:
    mp.setenv("LAB_RUNS_DIR", str(root / "runs"))
    mp.setenv("LAB_REPORTS_DIR", str(root / "reports"))
    return root


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """Every campaign notebook executed in order through papermill (later ones reuse earlier runs)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")  # tiny models: one thread each is fastest on a shared 2-core machine
        root = use_dirs(mp, tmp_path_factory.mktemp("lab"))
        for name, params in GRIDS.items():
            C.run_campaign(name, "smoke", params)
        yield root


def report_path(root: Path, name: str) -> Path:
    tag = C.variant_tag(name, C.check_params(name, {**GRIDS[name], "preset": "smoke"}))
    return root / "reports" / "smoke" / f"{REPORT[name]}-{tag}.md"


def run_ids(root: Path) -> dict[str, int]:
    return {p.parent.name: p.stat().st_mtime_ns for p in (root / "runs" / "smoke").glob("*/summary.json")}


def test_notebooks_execute_and_render_reports(executed):
    for name in GRIDS:
        text = report_path(executed, name).read_text()  # smoke and non-default grids: reports/smoke/, tagged
        assert text.startswith("# ") and "**Question.**" in text and "**Answer (at " in text, name
        assert "## Environment" in text and "| arm " in text, name
        nb = nbformat.read(next((executed / "runs" / "smoke" / "campaigns").glob(f"{name}-*.ipynb")), as_version=4)
        assert nb.metadata.papermill.parameters["preset"] == "smoke"
        assert not [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"], name
    assert not list((executed / "reports").glob("*.md"))  # the lab notebook (reports/*.md) is never touched
    verify = report_path(executed, "verify").read_text()
    assert "Yes: 1/1 run(s) finished" in verify and "## Routing" in verify and "| muon " in verify
    sweep = report_path(executed, "lr_sweep").read_text()
    assert "## Exploratory comparisons" in sweep and "confirmation seeds 100, 101" in sweep and "paired p" in sweep
    assert "(exploratory: the family judges muon_vs_adamw@400 only)" in sweep  # 6 steps: no family entry
    assert "Tuned Muon − tuned AdamW at budgets outside the family (exploratory" in report_path(executed,
                                                                                                 "horizon").read_text()
    for name in ("horizon", "geodesic", "advanced", "lazy_projection"):  # every tuned setting says where it's from
        needle = "| adamw_beta2 " if name == "horizon" else "| muon_lr "
        assert needle in report_path(executed, name).read_text() and "given as a parameter" in \
            report_path(executed, name).read_text(), name


def test_stages_use_disjoint_seeds_and_the_confirmation_reuses_nothing_from_selection(executed, monkeypatch):
    use_dirs(monkeypatch, executed)
    m = res.read_manifest("lr_sweep", "smoke", C.variant_tag("lr_sweep", C.check_params(
        "lr_sweep", {**GRIDS["lr_sweep"], "preset": "smoke"})))
    stages = {r["stage"] for r in m["runs"]}
    assert stages == {"select", "aux", "confirm"}
    assert {r["seed"] for r in m["runs"] if r["stage"] == "confirm"} == {100, 101}
    assert {r["seed"] for r in m["runs"] if r["stage"] != "confirm"} == {0, 1}
    keys = {c["key"]: c for c in m["choices"]}
    assert keys["muon_lr"]["value"] == 0.02 and keys["adamw_lr"]["value"] == 0.008  # lr=10 diverged: never chosen
    assert keys["aux_lr"]["stage"] == "aux" and keys["muon_lr"]["seeds"] == [0, 1]
    df = res.results("lr_sweep", "smoke", m=m)
    bad = "adamw lr=10 beta2=0.95 warmup=0"
    assert set(df[df.arm == bad].status) == {"diverged"}  # recorded, and the campaign went on
    assert set(df[df.arm != bad].status) == {"finished"}
    text = report_path(executed, "lr_sweep").read_text()
    assert "## Diverged, failed and unfinished runs" in text and f"- {bad} seed 0 (`" in text


def test_rerun_reuses_every_finished_run_and_renders_the_same_report(executed, monkeypatch):
    use_dirs(monkeypatch, executed)
    before, calls = run_ids(executed), []
    monkeypatch.setattr(E, "_train", lambda cfg, progress=False: calls.append(cfg) or pytest.fail("retrained"))
    old = report_path(executed, "lr_sweep").read_text()
    C.run_headless("lr_sweep", "smoke", **GRIDS["lr_sweep"])  # no papermill: the same grid function
    C.run_headless("lazy_projection", "smoke", **GRIDS["lazy_projection"])  # its grid ran on two spawned workers
    assert calls == [] and run_ids(executed) == before
    assert report_path(executed, "lr_sweep").read_text() == old  # same records, same report


@pytest.mark.parametrize("params, needle", [
    ({"muon_lr": "0.1"}, r"unknown parameter\(s\) \['muon_lr'\].*muon_lrs: list\[float\]"),
    ({"steps": "1.5"}, r"steps='1.5' is not a int"),
    ({"muon_lrs": [0.1, "x"]}, r"muon_lrs=\[0.1, 'x'\] is not a list\[float\]"),
    ({"muon_lrs": "[-1]"}, r"muon_lrs=\[-1.0\] is refused: config: lr=-1.0 must be > 0"),
    ({"adamw_lrs": [float("inf")]}, r"must be a finite number"),
    ({"steps": "-5"}, r"steps=-5 is refused"),
    ({"wandb": "bogus"}, r"wandb='bogus' is not one of disabled, offline, online"),
    ({"muon_lr": "0.1"}, r"unknown parameter\(s\) \['muon_lr'\] \(did you mean 'muon_lrs'\?\)"),
    ({"executor": "slurm"}, r"executor='slurm' is not one of local, submitit"),
    ({"tag": "a b"}, r"tag='a b' is not a usable name"),
    ({"devices": "[]"}, r"devices=\[\] is empty"),
    ({"devices": '["cpu", "cuda:0"]'}, r"mixes device kinds"),
    ({"devices": '["gpu"]'}, r"has device 'gpu'"),
    ({"seeds": "[]"}, r"seeds=\[\] is empty"),
    ({"seeds": "[0, 0]"}, r"has duplicates"),
    ({"confirm_seeds": "[1, 100]"}, r"confirm_seeds share \[1\] with seeds"),
])
def test_bad_parameters_are_refused_before_papermill(tmp_path, monkeypatch, params, needle):
    use_dirs(monkeypatch, tmp_path)
    with pytest.raises(ValueError, match=needle):
        C.run_campaign("lr_sweep", "smoke", params)
    assert not (tmp_path / "runs").exists()  # refused before anything ran or was written


def test_more_refusals(tmp_path, monkeypatch, capsys):
    use_dirs(monkeypatch, tmp_path)
    with pytest.raises(ValueError, match=r"modes=\['none'\] has an unknown geodesic mode; valid: lr, lr_norm"):
        C.run_campaign("geodesic", "smoke", {"modes": '["none"]'})
    with pytest.raises(ValueError, match=r"unknown feature\(s\) \['bogus'\]"):
        C.run_campaign("advanced", "smoke", {"arms": "['bogus']"})
    with pytest.raises(ValueError, match=r"frequencies=\[0\] is refused"):
        C.run_campaign("lazy_projection", "smoke", {"frequencies": "[0]"})
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['typo'\]"):
        C.run_campaign("all", "smoke", {"seeds": "[0]", "typo": "1"})
    with pytest.raises(ValueError, match="unknown campaign 'nope'"):
        C.run_campaign("nope", "smoke")
    from lab.cli import main
    for argv, needle in ((["lr_sweep", "-p", "lr", "-1"], "unknown parameter(s) ['lr']"),  # lr_sweep has muon_lrs
                         (["geodesic", "-p", "lr", "-1"], "lr=-1.0 is refused")):
        with pytest.raises(SystemExit) as e:  # refused while parsing: before main imports torch
            main(["campaign", *argv, "--preset", "smoke"])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1 and needle in err, err
    assert not (tmp_path / "runs").exists()


def test_notebooks_are_generated_clean_and_declare_their_parameters():
    """Each notebook's parameters cell is written from its module's PARAMS: what papermill reads from it (names,
    types, defaults) is exactly the declaration, and so are the CLI checks and help."""
    import ast

    import papermill as pm
    assert set(campaigns.names()) == {p.stem for p in C.NOTEBOOKS.glob("*.ipynb")}  # one notebook per module
    for name in campaigns.names():
        path, module = C.notebook_path(name), campaigns.get(name)
        nb = nbformat.read(path, as_version=4)
        assert nb == make_notebooks.build(name), f"{path} is stale: run notebooks/make_notebooks.py"
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")
        spec = params.spec(module)
        inspected = pm.inspect_notebook(str(path))
        assert {k: v["inferred_type_name"] for k, v in inspected.items()} == \
            {k: params.type_name(p.type) for k, p in spec.items()}, name
        assert {k: ast.literal_eval(v["default"]) for k, v in inspected.items()} == params.defaults(module), name
        assert {"preset", "devices", "wandb", "executor", "tag"} <= set(spec) and spec["preset"].default == "cpu"
        assert "campaign.check_params" in "".join(c.source for c in nb.cells)  # the notebook checks its own params
        assert C.check_params(name, {"preset": "smoke"}) == {**params.defaults(module), "preset": "smoke"}
        assert all(f"  {k}: " in C.help_text(name) for k in spec if k != "preset")
        if "confirm_seeds" in spec:
            assert set(spec["seeds"].default).isdisjoint(spec["confirm_seeds"].default)
    readme = (ROOT / "README.md").read_text()
    assert make_notebooks.readme(readme) == readme, "README's campaign table is stale: run notebooks/make_notebooks.py"
    p = params.defaults(campaigns.get("lr_sweep"))
    assert p["muon_lrs"] == [0.0115, 0.0163, 0.023, 0.0325, 0.046] and p["confirm_seeds"] == [100, 101, 102, 103,
                                                                                              104, 105]
    assert 5e-4 in p["plan_adamw_lrs"] and p["plan_muon_lrs"] == [0.001, 0.003, 0.01, 0.023, 0.05, 0.1]
    assert params.defaults(campaigns.get("horizon"))["budgets"] == [100, 200, 400, 800]


def test_plain_papermill_with_string_parameters(tmp_path):
    """`papermill ... -p muon_lrs '[0.02]'` passes strings: the notebook coerces and checks them itself, from a kernel
    in notebooks/ as well as from the repo root."""
    out = tmp_path / "out.ipynb"
    env = {**os.environ, "LAB_RUNS_DIR": str(tmp_path / "runs"), "LAB_REPORTS_DIR": str(tmp_path / "reports"),
           "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT)}
    cmd = [PY, "-m", "papermill", str(C.notebook_path("lr_sweep")), str(out), "-p", "preset", "smoke",
           "-p", "muon_lrs", "[0.02]", "-p", "adamw_lrs", "[0.008]", "-p", "aux_lrs", "[0.004]", "-p", "seeds", "[0]",
           "-p", "confirm_seeds", "[100]", "-p", "steps", "6", "-p", "plan_muon_lrs", "[]", "-p", "plan_adamw_lrs",
           "[]", "-p", "adamw_beta2s", "[0.95]", "-p", "warmup_fracs", "[0]", "-k", "python3", "--no-progress-bar",
           "--cwd",
           str(ROOT / "notebooks")]  # a kernel started where Jupyter starts it
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert list((tmp_path / "reports" / "smoke").glob("MUON_LR_SWEEP_REPORT-*.md"))


def test_cli_campaign_leaves_the_lab_notebook_alone_and_prints_no_false_error(tmp_path):
    """The tweak loop: a smoke campaign writes under reports/smoke/ (git-ignored), never reports/*.md, and a
    successful run prints no "ERROR | KeyboardInterrupt caught in kernel"."""
    env = {**os.environ, "LAB_RUNS_DIR": str(tmp_path / "runs"), "LAB_REPORTS_DIR": str(tmp_path / "reports"),
           "OMP_NUM_THREADS": "1"}
    p = subprocess.run([PY, "-m", "lab", "campaign", "verify", "--preset", "smoke", "-p", "steps", "6"], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "ERROR" not in p.stderr and "KeyboardInterrupt" not in p.stderr, p.stderr[-2000:]
    assert "without encryption" not in p.stderr and "| name " not in p.stdout  # routing table: --verbose only
    tag = C.variant_tag("verify", C.check_params("verify", {"preset": "smoke", "steps": "6"}))
    assert p.stdout.strip().splitlines()[-1] == \
        f"[lab] campaign verify: report {tmp_path}/reports/smoke/VERIFY_REPORT-{tag}.md"
    assert [x.relative_to(tmp_path / "reports").parts[0] for x in (tmp_path / "reports").rglob("*.md")] == ["smoke"]
    meta = records.read_json(next((tmp_path / "runs" / "smoke").glob("*/meta.json")))
    assert meta["command"] == "python -m lab campaign verify --preset smoke -p steps 6"  # not the kernel launcher


ARMS = {"a": {"optimizer": "adamw", "adamw_lr": 0.004}, "b": {"optimizer": "adamw", "adamw_lr": 0.008}}


def grid(name="g", **kw):
    return Grid(name, {"preset": "smoke", "devices": ["auto"], "wandb": "disabled", **kw}, params={"seeds": [0, 1]})


def test_interrupted_campaign_resumes(tmp_path, monkeypatch):
    use_dirs(monkeypatch, tmp_path)
    real, calls = E._train, []

    def killed_during_second_run(cfg, progress=False):
        calls.append(cfg.run_id())
        if len(calls) == 2:  # a kill after step 7: the checkpoint of step 6 is left to resume from
            from lab.train import train
            return train(cfg, progress=False, _stop_at=7)
        return real(cfg, progress)

    monkeypatch.setattr(E, "_train", killed_during_second_run)
    g = grid()
    with pytest.raises(KeyboardInterrupt):
        g.run("s", ARMS, [0, 1])
    m = records.read_json(res.manifest_path("g", "smoke", g.tag))
    ids = [r["run_id"] for r in m["runs"]]
    assert [r["arm"] for r in m["runs"]] == ["a", "a", "b", "b"] and len(set(ids)) == 4
    first = (tmp_path / "runs" / "smoke" / ids[0] / "summary.json").stat().st_mtime_ns
    partial = tmp_path / "runs" / "smoke" / ids[1]
    assert (partial / "ckpt.pt").exists() and not (partial / "summary.json").exists()
    calls.clear()
    monkeypatch.setattr(E, "_train", lambda cfg, progress=False: calls.append(cfg.run_id()) or real(cfg, progress))
    df = grid().run("s", ARMS, [0, 1])
    assert calls == ids[1:] and set(df.status) == {"finished"}
    assert (tmp_path / "runs" / "smoke" / ids[0] / "summary.json").stat().st_mtime_ns == first
    steps = [r["step"] for r in records.read_metrics(partial) if "train_loss" in r]
    assert steps == list(range(12))  # resumed at step 6, not restarted, no duplicate rows


def test_failed_run_is_recorded_and_campaign_goes_on(tmp_path, monkeypatch):
    use_dirs(monkeypatch, tmp_path)

    def fake(cfg, progress=False):
        if cfg.adamw_lr == 0.004:
            raise RuntimeError("out of memory (simulated)")
        s = {"run_id": cfg.run_id(), "status": "finished", "final_val_loss": 5.0, "best_val_loss": 5.0}
        records.write_json(Path(cfg.runs_dir) / cfg.run_id() / "summary.json", s)
        return s

    monkeypatch.setattr(E, "_train", fake)
    df = grid().run("s", ARMS, [0])
    assert list(df.status) == ["failed", "finished"] and "out of memory (simulated)" in df.error.iloc[0]


def test_a_run_held_by_another_process_is_skipped_and_the_stage_waits(tmp_path, monkeypatch, capsys):
    """Two campaigns sharing runs/: a run another process is training is skipped with one line, the stage refuses
    to choose from incomplete results, and the next rerun picks the run up."""
    use_dirs(monkeypatch, tmp_path)
    from lab.config import get_config
    held = get_config("smoke", **ARMS["a"], seed=0, campaign="g")
    lock = records.RunLock(res.runs_dir("smoke") / held.run_id(), held.run_id()).acquire()  # "the other process"
    g = grid()
    with pytest.raises(C.CampaignPending, match="1 run"):
        g.run("s", ARMS, [0])
    assert f"skipped: run {held.run_id()} is being trained by another process (pid {os.getpid()}" in \
        capsys.readouterr().err
    assert res.results("g", "smoke", g.tag).status.tolist() == ["running", "finished"]
    lock.release()
    assert set(grid().run("s", ARMS, [0]).status) == {"finished"}


def test_grid_edge_and_the_value_beyond_it():
    g = [0.01, 0.02, 0.04]
    assert [res.grid_edge(g, x) for x in (0.01, 0.02, 0.04, 0.03, None)] == ["lowest", None, "highest", None, None]
    assert res.grid_edge([0.01, 0.02], 0.02) is None  # two values have no inside to be sure of
    assert [arms.beyond_edge(g, x) for x in (0.01, 0.02, 0.04)] == [0.005, None, 0.08]


def test_a_winning_grid_edge_is_extended(tmp_path, monkeypatch):
    """run_grids adds the next value (x/2 or 2x) past an edge that wins, at most EXTEND_EDGES times per group, and
    never past an inside winner; a rerun replays the same grids from the records and trains nothing."""
    use_dirs(monkeypatch, tmp_path)
    optimum = {4: 0.02, 5: 0.1, 6: 1e-4}  # steps -> the lr with the lowest loss (groups: inside, above, far below)
    calls = []

    def fake(cfg, progress=False):  # final val loss: a parabola in log2(lr) around the group's optimum
        calls.append((cfg.steps, cfg.adamw_lr))
        loss = 1.0 + math.log2(cfg.adamw_lr / optimum[cfg.steps]) ** 2
        s = {"run_id": cfg.run_id(), "status": "finished", "final_val_loss": loss, "best_val_loss": loss}
        records.write_json(Path(cfg.runs_dir) / cfg.run_id() / "summary.json", s)
        return s

    monkeypatch.setattr(E, "_train", fake)
    args = ({k: arms.around(0.02) for k in optimum}, lambda k, x: {"optimizer": "adamw", "adamw_lr": x, "steps": k},
            lambda k, x: f"steps={k} lr={x:g}", [0])
    df, grids = grid().run_grids("s", *args)
    values = {k: list(v.values()) for k, v in grids.items()}
    assert arms.EXTEND_EDGES == 2
    assert values[4] == [0.01, 0.02, 0.04]                          # inside: nothing added
    assert values[5] == [0.01, 0.02, 0.04, 0.08, 0.16]              # 0.04 won, then 0.08: now inside
    assert values[6] == [0.0025, 0.005, 0.01, 0.02, 0.04]           # still the lowest edge after two extensions
    assert sorted(calls) == sorted((k, x) for k, xs in values.items() for x in xs)  # each run once
    assert len(df) == 13 and set(df.status) == {"finished"}
    assert res.best_arm(df[df.arm.isin(list(grids[5]))]) == "steps=5 lr=0.08"
    calls.clear()
    again = grid().run_grids("s", *args)[1]
    assert again == grids and calls == []


def test_later_campaigns_read_lr_sweeps_default_manifest_only(tmp_path, monkeypatch):
    use_dirs(monkeypatch, tmp_path)
    choice = lambda k, v: {"key": k, "value": v, "stage": "select", "seeds": [0, 1, 2], "grid": [v], "why": "w"}
    records.write_json(res.manifest_path("lr_sweep", "smoke", "abc123"), {  # a narrowed rerun: a variant
        "campaign": "lr_sweep", "preset": "smoke", "runs": [], "choices": [choice("muon_lr", 9.0)]})
    g = Grid("geodesic", {**params.defaults(campaigns.get("geodesic")), "preset": "smoke"})
    assert tuned(g)["muon_lr"] == 0.02  # the preset default: a variant never defines the tuned setting
    records.write_json(res.manifest_path("lr_sweep", "smoke"), {
        "campaign": "lr_sweep", "preset": "smoke", "runs": [],
        "choices": [choice("muon_lr", 0.05), choice("aux_lr", 0.016), choice("adamw_lr", 0.004)]})
    t = tuned(g)
    assert t == {"muon_lr": 0.05, "aux_lr": 0.016, "adamw_lr": 0.004}
    why = {c["key"]: c["why"] for c in g.m["choices"]}
    assert why["muon_lr"].startswith("lr_sweep's choice at preset smoke") and "grid [0.05]" in why["muon_lr"]
    assert tuned(g, lr=0.3)["muon_lr"] == 0.3


def test_variant_tags():
    d = {**params.defaults(campaigns.get("lr_sweep")), "preset": "cpu"}
    assert C.variant_tag("lr_sweep", d) == ""
    assert C.variant_tag("lr_sweep", {**d, "devices": ["cpu", "cpu"], "wandb": "offline"}) == ""  # same numbers
    assert len(C.variant_tag("lr_sweep", {**d, "muon_lrs": [0.02]})) == 6
    assert res.reports_dir("cpu") == res.reports_root() and res.reports_dir("cpu", "abc") != res.reports_root()
    assert res.reports_dir("smoke") == res.reports_root() / "smoke"
