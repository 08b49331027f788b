"""The tweak loop: an ad-hoc `compare` campaign, a campaign added as one temporary module, refusals before torch is
imported, the last line naming the report, `campaign all` re-rendering the index, wandb-sync from the records."""
import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lab import campaign as C
from lab import campaigns, params, records
from lab import executor as E
from lab import results as res
from lab.cli import main

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
EXAMPLE = ["-p", "arms", '{"m0.90": {"momentum": 0.9}, "m0.95": {}}', "-p", "baseline", "m0.95", "-p", "seeds",
           "[0,1]"]


def env(root: Path) -> dict:
    return {**os.environ, "LAB_RUNS_DIR": str(root / "runs"), "LAB_REPORTS_DIR": str(root / "reports"),
            "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


@pytest.mark.parametrize("given, needle", [
    ({"arms": '{"a": {"lrr": 0.1}, "b": {}}', "baseline": "b"}, "arm 'a' has unknown config key 'lrr' (did you mean "
                                                                "'lr'?)"),
    ({"arms": '{"a": {"lr": -1}, "b": {}}', "baseline": "b"}, "arm 'a' is refused: config: lr=-1.0 must be > 0"),
    ({"arms": '{"a": {"momentum": "x"}, "b": {}}', "baseline": "b"}, "momentum='x' is not a valid float"),
    ({"arms": '{"a": {"seed": 3}, "b": {}}', "baseline": "b"}, "sets 'seed', which the campaign sets itself"),
    ({"arms": '{"a": {"momentum": 0.95}, "b": {}}', "baseline": "b"}, "arms 'a' and 'b' are the same config"),
    ({"arms": '{"a": {}, "b": {"lr": 0.03}}', "baseline": "bb"}, "baseline='bb' is not an arm (did you mean 'b'?)"),
    ({"arms": '{"a": {}}', "baseline": "a"}, "needs at least two arms"),
    ({"arms": '[1, 2]'}, "parameter arms='[1, 2]' is not a dict"),
    ({"base": '{"stepz": 5}'}, "base has unknown config key 'stepz' (did you mean 'steps'?)"),
    ({"confirm_seeds": "[0]"}, "confirm_seeds share [0] with seeds"),
])
def test_bad_arms_are_refused_before_any_work(dirs, given, needle):
    with pytest.raises(ValueError) as e:
        C.run_campaign("compare", "smoke", given)
    assert needle in str(e.value) and "\n" not in str(e.value)
    assert not (dirs / "runs").exists()


def test_refusals_come_before_torch_is_imported(tmp_path):
    """`-X importtime` lists every module imported: a refused campaign parameter never gets as far as torch."""
    for argv in (["campaign", "lr_sweep", "-p", "muon_lr", "0.1"],
                 ["campaign", "compare", "-p", "arms", '{"a": {"lrr": 1}, "b": {}}', "-p", "baseline", "b"]):
        p = subprocess.run([PY, "-X", "importtime", "-m", "lab", *argv], cwd=ROOT, env=env(tmp_path),
                           capture_output=True, text=True, timeout=120)
        err = p.stderr.splitlines()
        assert p.returncode == 2 and err[-1].startswith("error: campaign ") and "did you mean" in err[-1]
        imported = {line.split("|")[-1].strip() for line in err if line.startswith("import time:")}
        assert "lab.config" in imported and not {"torch", "pandas", "papermill"} & imported, argv


def test_compare_example_through_the_cli_and_plain_papermill(tmp_path):
    p = subprocess.run([PY, "-m", "lab", "campaign", "compare", "--preset", "smoke", *EXAMPLE], cwd=ROOT,
                       env=env(tmp_path), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    last = p.stdout.strip().splitlines()[-1]
    m = re.fullmatch(r"\[lab\] campaign compare: report (.*/reports/smoke/COMPARE_REPORT-(\w+)\.md)", last)
    assert m, last
    assert "without encryption" not in p.stderr and "ERROR" not in p.stderr
    text = Path(m.group(1)).read_text()
    assert "| `m0.90` vs baseline `m0.95` | 2 selection |" in text and "**Variant `" in text
    assert f"python -m lab report compare --preset smoke --variant {m.group(2)}" in text
    # the same through plain papermill (strings, as `-p` passes them): the notebook checks and reuses every run
    out = tmp_path / "out.ipynb"
    q = subprocess.run([PY, "-m", "papermill", str(C.notebook_path("compare")), str(out), "-p", "preset", "smoke",
                        *EXAMPLE, "-k", "python3", "--no-progress-bar", "--log-output", "--cwd",
                        str(ROOT / "notebooks")], env=env(tmp_path), capture_output=True, text=True, timeout=600)
    assert q.returncode == 0, q.stderr[-3000:]
    assert "4 runs in 2 arms x 2 seeds, 0 to train" in q.stdout + q.stderr
    assert Path(m.group(1)).read_text() == text


def test_compare_confirms_the_best_arm_on_fresh_seeds_and_names_its_variant(dirs, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    given = {"arms": {"m0.80": {"momentum": 0.8}, "m0.90": {"momentum": 0.9}, "m0.95": {}}, "baseline": "m0.95",
             "base": {"steps": 6}, "seeds": [0, 1], "confirm_seeds": [100, 101], "tag": "momentum"}
    path = C.run_headless("compare", "smoke", **given)
    assert path == dirs / "reports" / "smoke" / "COMPARE_REPORT-momentum.md"
    m = res.read_manifest("compare", "smoke", "momentum")
    assert m["named"] and m["choices"][0]["key"] == "best_arm" and m["choices"][0]["seeds"] == [0, 1]
    best = m["choices"][0]["value"]
    assert {(r["stage"], r["arm"]) for r in m["runs"] if r["stage"] == "confirm"} == {("confirm", "m0.95"),
                                                                                        ("confirm", best)}
    text = path.read_text()
    assert f"| `{best}` vs baseline `m0.95` | 2 confirmation |" in text and "on fresh confirmation seeds" in text
    assert "-p tag momentum" in text  # the regenerate command gives the name again
    with pytest.raises(ValueError, match="variant 'momentum' at preset smoke exists with other parameters"):
        C.run_headless("compare", "smoke", **{**given, "seeds": [0, 2]})


TOY = '''
"""A toy campaign: does the larger of two AdamW lrs win?"""
from lab.arms import adamw
from lab.params import Param

NAME, ORDER = "toy", 999
TITLE = "Toy campaign"
QUESTION = "Does the larger AdamW lr win?"
HYPOTHESES = [("headline", "The larger lr wins")]
REPORT = "TOY_REPORT.md"
PARAMS = {"seeds": Param(list[int], [0, 1], "seeds", field="seed"),
          "lrs": Param(list[float], [0.004, 0.008], "two AdamW lrs", field="adamw_lr")}


def arm_tags(o):
    return {"lr": o["adamw_lr"]}


def stages(g, p):
    g.run("select", {f"adamw lr={x:g}": adamw(x, steps=6) for x in p["lrs"]}, p["seeds"])


def analyse(r):
    sel = r.stage("select")
    big, small = (r.arm_of(sel, lr=f(r.params["lrs"])) for f in (max, min))
    head = r.compare(big, small, "select", key="headline")
    r.answer.append(lambda: r.say(head, "the larger lr wins", "the larger lr loses", "no difference") + ".")
    r.grid_table(sel, "select", "Both lrs")
    r.curves(sel, baseline=small, swept="lr")
'''


def test_a_campaign_is_one_module(dirs, tmp_path, monkeypatch):
    """A new campaign in a temporary module: registered, checked, its notebook built, its stages run and its report
    rendered, with no other file touched."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
    (tmp_path / "toy.py").write_text(textwrap.dedent(TOY))
    spec = importlib.util.spec_from_file_location("toy_campaign", tmp_path / "toy.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    campaigns.register(mod)
    try:
        with pytest.raises(ValueError, match=r"lrs=\[-1.0\] is refused"):
            C.check_params("toy", {"preset": "smoke", "lrs": "[-1]"})
        sys.path.insert(0, str(C.NOTEBOOKS))
        import make_notebooks
        assert "lrs: list[float] = [0.004, 0.008]  # two AdamW lrs" in make_notebooks.build("toy").cells[1].source
        path = C.run_headless("toy", "smoke")
        text = path.read_text()
        assert path == dirs / "reports" / "smoke" / "TOY_REPORT.md"
        assert text.startswith("# Toy campaign\n\n**Question.** Does the larger AdamW lr win?")
        assert "| `adamw lr=0.008` vs `adamw lr=0.004` | 2 selection |" in text and "## Both lrs" in text
        assert (dirs / "reports" / "smoke" / "figs" / "toy_curves.png").exists()
    finally:
        campaigns.unregister("toy")
        sys.path.remove(str(C.NOTEBOOKS))
    assert subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout == before


def test_campaign_all_renders_the_index_and_says_where(dirs, monkeypatch, capsys):
    ran = []
    run_all = C.run_campaign
    monkeypatch.setattr(C, "run_campaign", lambda n, preset, given: ran.append((n, given)))
    path = run_all("all", "smoke", {"steps": "6", "budgets": "[6]"})
    assert [n for n, _ in ran] == campaigns.names(lab_notebook=True) and "compare" not in [n for n, _ in ran]
    assert dict(ran)["horizon"] == {"budgets": "[6]"} and dict(ran)["verify"] == {"steps": "6"}
    assert path == dirs / "reports" / "smoke" / "INDEX.md" and "| verify " in path.read_text()
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"[lab] campaign all: index {path}"


def test_finished_runs_are_not_mirrored_silently_and_wandb_sync_mirrors_them(dirs, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_SILENT", "true")
    calls = []

    def fake(cfg, progress=False):
        calls.append(cfg)
        d = Path(cfg.runs_dir) / cfg.run_id()
        records.write_json(d / "config.json", cfg.to_dict())
        records.atomic_write(d / "metrics.jsonl", "".join(json.dumps({"step": s, "val_loss": 5.0 - s / 10}) + "\n"
                                                          for s in (0, 6)))
        s = {"run_id": cfg.run_id(), "status": "finished", "final_val_loss": 4.4, "steps": 6}
        records.write_json(d / "summary.json", s)
        return s

    monkeypatch.setattr(E, "_train", fake)
    given = {"steps": 6, "seeds": [0, 1]}
    C.run_headless("verify", "smoke", **given)
    capsys.readouterr()
    C.run_headless("verify", "smoke", **given, wandb="offline")  # both runs finished: nothing trains
    tag = params.variant_tag(campaigns.get("verify"), {**params.defaults(campaigns.get("verify")), **given,
                                                       "preset": "smoke"})
    out = capsys.readouterr().out
    assert len(calls) == 2
    assert (f"[lab] 2 finished runs not mirrored to wandb; `python -m lab wandb-sync verify --preset smoke --variant "
            f"{tag} --mode offline` uploads them from their records") in out
    assert main(["wandb-sync", "verify", "--preset", "smoke", "--variant", tag, "--mode", "offline"]) == 0
    assert "2 run(s) of campaign verify at preset smoke mirrored" in capsys.readouterr().out
    for cfg in calls:
        runs = list((res.runs_dir("smoke") / cfg.run_id() / "wandb").glob(f"offline-run-*-{cfg.run_id()}"))
        assert len(runs) == 1 and list(runs[0].glob("*.wandb")), cfg.run_id()
