"""Write the campaign notebooks (notebooks/<name>.ipynb) from this one file: `python notebooks/make_notebooks.py`.

The notebooks are thin drivers: a parameters cell (papermill), one call into lab.campaign, a table, the report.
They are written commit-clean (no outputs, no execution counts, fixed cell ids) so regenerating them gives no diff.
Everything worth testing lives in lab/ (lab.campaign, lab.report).
"""
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

COMMON_HEAD = [
    'preset: str = "cpu"  # smoke | cpu | h100: model, data and steps (lab.config.PRESETS)',
]
COMMON_TAIL = [
    'steps: int = 0  # training steps per run; 0 means the preset default',
    'devices: list[str] = ["auto"]  # one worker per entry: ["cpu", "cpu"], ["cuda:0", "cuda:1"]; auto: cuda if any',
    'wandb: str = "disabled"  # disabled | offline | online (group: campaign, name: run id)',
]
SEEDS3 = 'seeds: list[int] = [0, 1, 2]  # one run per seed per grid point'
BEST_LR = 'lr: float = 0.0  # peak Muon lr; 0 means the best Muon lr of lr_sweep (else the preset default)'

NOTEBOOKS = {
    "verify": dict(
        title="Verify: one Muon run on nGPT",
        intro="Does a Muon run complete? Prints the routing table (which optimizer takes each parameter), the "
              "singular values of one orthogonalized real gradient (they should sit near 1) and the loss curve.",
        params=['seeds: list[int] = [0]  # one Muon run per seed',
                'lr: float = 0.0  # peak Muon lr; 0 means the preset default'],
        extra='run_dir = campaign.runs_dir() / df.run_id.iloc[0]\n'
              'print((run_dir / "routing.md").read_text())\n'
              'print(json.dumps(json.loads((campaign.runs_dir() / "campaigns" / f"verify-{preset}.checks.json")'
              '.read_text()), indent=1))',
    ),
    "lr_sweep": dict(
        title="Muon learning-rate sweep",
        intro="Muon's peak lr against AdamW; AdamW gets its own small lr sweep so the baseline (its best lr) is "
              "fair. Writes reports/MUON_LR_SWEEP_REPORT.md; later campaigns read the best lrs from these runs.",
        params=[SEEDS3,
                'muon_lrs: list[float] = [0.001, 0.003, 0.01, 0.023, 0.05, 0.1]  # peak Muon lr (hidden matrices)',
                'adamw_lrs: list[float] = [0.001, 0.002, 0.004, 0.008, 0.016, 0.032]  # AdamW lrs (the best one is the baseline)'],
    ),
    "geodesic": dict(
        title="Geodesic Muon updates",
        intro="Projection after an ambient step (geodesic none) against an exact geodesic step with theta = lr or "
              "theta = lr * ||U||, at the best Muon lr. Writes reports/GEODESIC_MUON_REPORT.md.",
        params=[SEEDS3, BEST_LR,
                'modes: list[str] = ["none", "lr", "lr_norm"]  # geodesic modes; none is projection (the baseline)'],
    ),
    "advanced": dict(
        title="Advanced Muon features",
        intro="Polar Express, NorMuon and cautious weight decay (against plain decay at the same strength) and "
              "combinations, at the best Muon lr. Writes reports/ADVANCED_MUON_REPORT.md.",
        params=[SEEDS3, BEST_LR,
                'weight_decay: float = 0.1  # Muon decay strength of the weight_decay and cautious_wd arms',
                'arms: list[str] = ["newton_schulz", "polar_express", "normuon", "weight_decay", "cautious_wd", '
                '"polar_express+normuon", "polar_express+normuon+cautious_wd"]  # features joined with +; '
                'newton_schulz alone is plain Muon (the baseline)'],
    ),
    "lazy_projection": dict(
        title="Lazy sphere projection",
        intro="Project nGPT's matrices back to the sphere only every N-th step, for Muon (best lr) and AdamW (best "
              "AdamW lr). Writes reports/LAZY_PROJECTION_REPORT.md.",
        params=[SEEDS3,
                'frequencies: list[int] = [1, 3, 5, 7, 10, 15, 20]  # project_every values for both optimizers',
                BEST_LR,
                'adamw_lr: float = 0.0  # AdamW lr; 0 means the best AdamW lr of lr_sweep (else the preset default)'],
    ),
}


def build(name: str, spec: dict) -> nbformat.NotebookNode:
    params = COMMON_HEAD + spec["params"] + COMMON_TAIL
    names = [line.split(":")[0] for line in params]
    call = ", ".join(f"{n}={n}" for n in names)
    cells = [
        new_markdown_cell(f"# {spec['title']}\n\n{spec['intro']}\n\n"
                          f"Run it with `python -m lab campaign {name} --preset cpu -p seeds '[0, 1]'` (or top to "
                          "bottom here). Runs are identified by their config hash: after a parameter change only "
                          "the runs whose config changed are trained."),
        new_code_cell("\n".join(params), metadata={"tags": ["parameters"]}),
        new_code_cell(("import json\n\n" if "extra" in spec else "") + "from lab import campaign, report\n\n"
                      f"df = campaign.{name}({call})\n"
                      'df[["arm", "seed", "run_id", "status", "final_val_loss", "tokens_per_s"]]'),
    ]
    if "extra" in spec:
        cells.append(new_code_cell(spec["extra"]))
    cells.append(new_code_cell(f'report.show("{name}", preset)  # renders the report file, its table and plots'))
    for i, c in enumerate(cells):
        c["id"] = f"{name}-{i}"
    nb = new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"}})
    nbformat.validate(nb)
    return nb


def main() -> None:
    for name, spec in NOTEBOOKS.items():
        nbformat.write(build(name, spec), HERE / f"{name}.ipynb")
        print(f"wrote notebooks/{name}.ipynb")


if __name__ == "__main__":
    main()
