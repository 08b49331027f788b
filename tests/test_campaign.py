"""Campaigns at the smoke preset: every notebook through papermill, parameter checks, reuse, divergence, resume."""
import sys
from pathlib import Path

import nbformat
import pytest

from lab import campaign as C
from lab import records

sys.path.insert(0, str(C.NOTEBOOKS))
import make_notebooks  # noqa: E402

STEPS = 6  # smoke runs of 6 steps: val at 0 and at the end
GRIDS = {  # the smallest grids that still compare arms; strings as the CLI passes them, lists as Python does
    "verify": {"steps": str(STEPS)},
    "lr_sweep": {"seeds": "[0, 1]", "steps": str(STEPS), "muon_lrs": "[0.02]", "adamw_lrs": "0.008, 10"},
    "geodesic": {"seeds": [0, 1], "steps": STEPS, "modes": ["none", "lr"]},
    "advanced": {"seeds": [0, 1], "steps": STEPS, "arms": ["newton_schulz", "cautious_wd"], "weight_decay": 0.1},
    "lazy_projection": {"seeds": [0, 1], "steps": STEPS, "frequencies": [1, 3], "devices": ["cpu", "cpu"]},
}
REPORTS = {"verify": "VERIFY_REPORT.md", "lr_sweep": "MUON_LR_SWEEP_REPORT.md", "geodesic": "GEODESIC_MUON_REPORT.md",
           "advanced": "ADVANCED_MUON_REPORT.md", "lazy_projection": "LAZY_PROJECTION_REPORT.md"}


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


def summaries(root: Path) -> dict[str, float]:
    return {p.parent.name: p.stat().st_mtime_ns for p in (root / "runs").glob("*/summary.json")}


def test_notebooks_execute_and_render_reports(executed):
    for name, file in REPORTS.items():
        text = (executed / "reports" / file).read_text()
        assert text.startswith("# ") and "**Question.**" in text and "**Answer.**" in text, name
        assert "## Results" in text and "| arm " in text and "## Environment" in text, name
        assert f"executed notebook: [../runs/campaigns/{name}-smoke.ipynb]" in text, name
        assert (executed / "reports" / "figs" / f"{name}_curves.png").stat().st_size > 1000, name
        nb = nbformat.read(executed / "runs" / "campaigns" / f"{name}-smoke.ipynb", as_version=4)
        assert nb.metadata.papermill.parameters["preset"] == "smoke"
        assert not [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"], name
    assert (executed / "reports" / "figs" / "lr_sweep_sweep.png").exists()
    assert (executed / "reports" / "figs" / "lazy_projection_sweep.png").exists()
    sweep = (executed / "reports" / REPORTS["lr_sweep"]).read_text()
    assert "the baseline `adamw lr=0.008`" in sweep and "Welch p = " in sweep
    verify = (executed / "reports" / REPORTS["verify"]).read_text()
    assert "**Answer.** Yes: 1/1 Muon run(s) finished" in verify and "singular values" in verify
    assert "## Routing" in verify and "| muon " in verify
    for name in ("geodesic", "advanced", "lazy_projection"):  # later campaigns read the best lr of lr_sweep
        text = (executed / "reports" / REPORTS[name]).read_text()
        assert "muon lr = 0.02: the best muon arm of lr_sweep at preset smoke" in text, name
    lazy = (executed / "reports" / REPORTS["lazy_projection"]).read_text()
    assert "adamw adamw_lr = 0.008: the best adamw arm" in lazy
    assert "`cautious_wd`" in (executed / "reports" / REPORTS["advanced"]).read_text()


def test_diverged_run_is_reported(executed):
    df = C.results("lr_sweep", "smoke")
    assert set(df[df.arm == "adamw lr=10"].status) == {"diverged"}
    assert set(df[df.arm != "adamw lr=10"].status) == {"finished"}  # the campaign went on
    text = (executed / "reports" / REPORTS["lr_sweep"]).read_text()
    assert "## Diverged and failed runs" in text and "- adamw lr=10 seed 1 (`" in text and "diverged at step" in text
    row = next(line for line in text.splitlines() if line.startswith("| adamw lr=10 "))
    assert [c.strip() for c in row.split("|")[2:6]] == ["2", "0", "2", "0"]  # seeds, finished, diverged, failed


def test_rerun_reuses_every_finished_run(executed, monkeypatch):
    use_dirs(monkeypatch, executed)
    before = summaries(executed)
    calls = []
    monkeypatch.setattr(C, "_train", lambda cfg, progress=False: calls.append(cfg) or pytest.fail("retrained"))
    old = (executed / "reports" / REPORTS["lr_sweep"]).read_text()
    df = C.run_headless("lr_sweep", "smoke", **GRIDS["lr_sweep"])  # no papermill: the same grid function
    assert calls == [] and summaries(executed) == before and len(df) == 6
    assert (executed / "reports" / REPORTS["lr_sweep"]).read_text() == old  # same records, same report
    lazy = C.lazy_projection("smoke", **GRIDS["lazy_projection"])  # its grid ran on two spawned workers
    assert calls == []
    sweep = C.results("lr_sweep", "smoke")
    for opt, arm in (("muon", "muon lr=0.02"), ("adamw", "adamw lr=0.008")):  # same identity on any worker
        assert list(lazy[lazy.arm == f"{opt} every=1"].run_id) == list(sweep[sweep.arm == arm].run_id)


def test_unknown_or_mistyped_parameter_is_refused(tmp_path, monkeypatch):
    use_dirs(monkeypatch, tmp_path)
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['muon_lr'\].*muon_lrs: list\[float\]"):
        C.run_campaign("lr_sweep", "smoke", {"muon_lr": "0.1"})
    with pytest.raises(ValueError, match=r"steps='1.5' is not a int.*seeds: list\[int\]"):
        C.run_campaign("lr_sweep", "smoke", {"steps": "1.5"})
    with pytest.raises(ValueError, match=r"muon_lrs=\[0.1, 'x'\] is not a list\[float\]"):
        C.run_campaign("lr_sweep", "smoke", {"muon_lrs": [0.1, "x"]})
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['typo'\]"):
        C.run_campaign("all", "smoke", {"seeds": "[0]", "typo": "1"})
    with pytest.raises(ValueError, match="unknown campaign 'nope'"):
        C.run_campaign("nope", "smoke")
    with pytest.raises(ValueError, match="unknown parameter"):
        C.run_headless("geodesic", "smoke", lrs=[0.1])
    with pytest.raises(ValueError, match="one kind"):
        C.run_arms("pool", "smoke", {"a": {}}, seeds=[0], devices=["cpu", "cuda:0"])
    assert not (tmp_path / "runs").exists()  # refused before anything ran


def test_parameters_cells(tmp_path):
    types = {"seeds": "list[int]", "muon_lrs": "list[float]", "steps": "int", "wandb": "str", "flag": "bool"}
    assert C.coerce_params("x", {"seeds": "0,1", "muon_lrs": "[1e-3, 2]", "steps": "3e2", "wandb": "offline",
                                 "flag": "true"}, types) == {"seeds": [0, 1], "muon_lrs": [0.001, 2.0], "steps": 300,
                                                             "wandb": "offline", "flag": True}
    import papermill as pm
    for name, spec in make_notebooks.NOTEBOOKS.items():
        path = C.notebook_path(name)
        nb = nbformat.read(path, as_version=4)
        assert nb == make_notebooks.build(name, spec), f"{path} is stale: run notebooks/make_notebooks.py"
        assert nb.metadata.kernelspec.name == "python3"
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")
        specs = C.notebook_specs(name)
        assert {k: v["inferred_type_name"] for k, v in pm.inspect_notebook(str(path)).items()} == \
            {k: t for k, (t, _) in specs.items()}, name
        assert {"preset", "seeds", "steps", "devices", "wandb"} <= set(specs)
        assert specs["wandb"] == ("str", "disabled") and specs["preset"] == ("str", "cpu")
        if name != "verify":
            assert len(specs["seeds"][1]) >= 3
    assert C.notebook_parameters("lr_sweep")["muon_lrs"] == [0.001, 0.003, 0.01, 0.023, 0.05, 0.1]
    assert C.notebook_parameters("lazy_projection")["frequencies"] == [1, 3, 5, 7, 10, 15, 20]


ARMS = {"a": {"optimizer": "adamw", "adamw_lr": 0.004}, "b": {"optimizer": "adamw", "adamw_lr": 0.008}}


def test_interrupted_campaign_resumes(tmp_path, monkeypatch):
    use_dirs(monkeypatch, tmp_path)
    real, calls = C._train, []

    def killed_during_second_run(cfg, progress=False):
        calls.append(cfg.run_id())
        if len(calls) == 2:  # a kill after step 7: the checkpoint of step 6 is left to resume from
            from lab.train import train
            return train(cfg, progress=False, _stop_at=7)
        return real(cfg, progress)

    monkeypatch.setattr(C, "_train", killed_during_second_run)
    with pytest.raises(KeyboardInterrupt):
        C.run_arms("resume", "smoke", ARMS, seeds=[0, 1], progress=False)
    m = records.read_json(C.manifest_path("resume", "smoke"))
    ids = [r["run_id"] for r in m["runs"]]
    assert [r["arm"] for r in m["runs"]] == ["a", "a", "b", "b"] and len(set(ids)) == 4
    first = (tmp_path / "runs" / ids[0] / "summary.json").stat().st_mtime_ns
    partial = tmp_path / "runs" / ids[1]
    assert (partial / "ckpt.pt").exists() and not (partial / "summary.json").exists()
    calls.clear()
    monkeypatch.setattr(C, "_train", lambda cfg, progress=False: calls.append(cfg.run_id()) or real(cfg, progress))
    df = C.run_arms("resume", "smoke", ARMS, seeds=[0, 1], progress=False)
    assert calls == ids[1:] and set(df.status) == {"finished"}
    assert (tmp_path / "runs" / ids[0] / "summary.json").stat().st_mtime_ns == first
    steps = [r["step"] for r in records.read_metrics(tmp_path / "runs" / ids[1]) if "train_loss" in r]
    assert steps == list(range(12))  # resumed at step 6, not restarted, no duplicate rows


def test_failed_run_is_recorded_and_campaign_goes_on(tmp_path, monkeypatch):
    use_dirs(monkeypatch, tmp_path)

    def fake(cfg, progress=False):
        if cfg.adamw_lr == 0.004:
            raise RuntimeError("out of memory (simulated)")
        s = {"run_id": cfg.run_id(), "status": "finished", "final_val_loss": 5.0, "best_val_loss": 5.0}
        records.write_json(Path(cfg.runs_dir) / cfg.run_id() / "summary.json", s)
        return s

    monkeypatch.setattr(C, "_train", fake)
    df = C.run_arms("fails", "smoke", ARMS, seeds=[0], progress=False)
    assert list(df.status) == ["failed", "finished"]
    assert "out of memory (simulated)" in df.error[0]
