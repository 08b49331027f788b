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
    'devices: list[str] = ["auto"]  # one worker per entry: ["cpu", "cpu"], ["cuda:0", "cuda:1"]; auto: cuda if any',
    'wandb: str = "disabled"  # disabled | offline | online (group: campaign, name: run id)',
]
STEPS = 'steps: int = 0  # training steps per run; 0 means the preset default'
SEEDS = 'seeds: list[int] = [0, 1]  # selection seeds: they pick the settings'
CONFIRM = 'confirm_seeds: list[int] = [100, 101, 102]  # fresh seeds that judge the picked arm against its baseline'
LR = 'lr: float = 0.0  # Muon peak lr; 0: the one lr_sweep chose at this preset (else the preset default)'
AUX = 'aux_lr: float = 0.0  # lr of the hybrid\'s AdamW groups (embedding, head, scalars); 0: lr_sweep\'s choice'
ADAMW = 'adamw_lr: float = 0.0  # AdamW baseline lr; 0: the one lr_sweep chose at this preset'

NOTEBOOKS = {
    "verify": dict(
        title="Verify: one Muon run on nGPT",
        intro="Does a Muon run complete? Prints the routing table (which optimizer takes each parameter), the "
              "singular values of one orthogonalized real gradient (they should sit near 1) and the loss curve.",
        params=['seeds: list[int] = [0]  # one Muon run per seed',
                'lr: float = 0.0  # peak Muon lr; 0 means the preset default', STEPS],
        extra='run_dir = results.runs_dir(preset) / df.run_id.iloc[0]\n'
              'print((run_dir / "routing.md").read_text())',
    ),
    "lr_sweep": dict(
        title="Muon learning-rate sweep",
        intro="Tunes both arms before comparing them: Muon's peak lr and AdamW's lr each on its own grid, then the "
              "hybrid's AdamW groups (one aux lr) at the best Muon lr, all on the selection seeds; the tuned Muon and "
              "the tuned AdamW then run on fresh confirmation seeds. Writes reports/MUON_LR_SWEEP_REPORT.md; later "
              "campaigns read the chosen lrs from these records.",
        params=['seeds: list[int] = [0, 1, 2]  # selection seeds: they pick the lrs', CONFIRM,
                'muon_lrs: list[float] = [0.001, 0.003, 0.01, 0.023, 0.05, 0.1]  # the research plan\'s Muon grid',
                'adamw_lrs: list[float] = [0.0005, 0.002, 0.004, 0.008, 0.016]  # 5e-4: the plan\'s Adam lr',
                'aux_lrs: list[float] = [0.004, 0.008, 0.016]  # aux lr of the hybrid\'s AdamW groups',
                STEPS],
    ),
    "horizon": dict(
        title="Muon vs AdamW across training budgets",
        intro="At each budget, each optimizer's lr is chosen on [x/2, x, 2x] around its tuned value from lr_sweep "
              "(selection seeds; extended by a factor of 2 past an edge that wins, at most twice); the chosen arms "
              "then run on the confirmation seeds. Writes reports/HORIZON_REPORT.md: final val loss vs tokens, "
              "Δ per budget, where the curves cross, and Muon's steps (and wall clock) to reach AdamW's final loss.",
        params=[SEEDS, CONFIRM,
                'budgets: list[int] = [100, 200, 400, 800]  # training steps per run (x 2048 tokens at cpu)',
                LR, AUX, ADAMW],
    ),
    "geodesic": dict(
        title="Geodesic Muon updates",
        intro="Projection after an ambient step against exact geodesic steps with theta = lr or theta = lr * ||T||, "
              "at matched step size: each mode gets its own lr grid around the tuned Muon lr (selection seeds); the "
              "best geodesic mode and projection, each at its best lr, then run on the confirmation seeds. Writes "
              "reports/GEODESIC_MUON_REPORT.md.",
        params=[SEEDS, CONFIRM,
                'modes: list[str] = ["lr", "lr_norm"]  # geodesic modes; projection is always the baseline',
                LR, AUX, STEPS],
    ),
    "advanced": dict(
        title="Advanced Muon features",
        intro="Polar Express, NorMuon and cautious weight decay (against plain decay at the same strength) and "
              "combinations, at the tuned hybrid Muon (selection seeds); the best one and plain Muon then run on "
              "the confirmation seeds. Writes reports/ADVANCED_MUON_REPORT.md.",
        params=[SEEDS, CONFIRM,
                'arms: list[str] = ["newton_schulz", "polar_express", "normuon", "weight_decay", "cautious_wd", '
                '"polar_express+normuon", "polar_express+normuon+cautious_wd"]  # features joined with +; '
                'newton_schulz alone is plain Muon (the baseline)',
                'weight_decay: float = 0.1  # Muon decay strength of the weight_decay and cautious_wd arms',
                LR, AUX, STEPS],
    ),
    "lazy_projection": dict(
        title="Lazy sphere projection",
        intro="Project nGPT's matrices back to the sphere only every N-th step, for tuned Muon and tuned AdamW "
              "(selection seeds); Muon's best N and the laziness interaction (Muon@N - Muon@1) - (AdamW@N - AdamW@1) "
              "are then judged on the confirmation seeds. Writes reports/LAZY_PROJECTION_REPORT.md.",
        params=[SEEDS, CONFIRM,
                'frequencies: list[int] = [1, 3, 7, 10, 20]  # project_every values for both optimizers (7: the plan)',
                LR, AUX, ADAMW, STEPS],
    ),
}


def build(name: str, spec: dict) -> nbformat.NotebookNode:
    params = COMMON_HEAD + spec["params"] + COMMON_TAIL
    names = [line.split(":")[0] for line in params]
    call = ", ".join(f"{n}={n}" for n in names)
    cells = [
        new_markdown_cell(f"# {spec['title']}\n\n{spec['intro']}\n\n"
                          f"Run it with `python -m lab campaign {name} --preset smoke` (or plain papermill, or top "
                          "to bottom here). Runs are identified by their config hash: after a parameter change only "
                          "the runs whose config changed are trained. Non-default parameters make a variant: its "
                          "records and report are kept apart (reports/<preset>/), so a tweak never overwrites the "
                          "committed lab notebook."),
        new_code_cell("\n".join(params), metadata={"tags": ["parameters"]}),
        new_code_cell("from lab import campaign, report, results\n\n"
                      f"# coerce (plain `papermill -p` passes strings) and check every value before any work\n"
                      f"params = campaign.check_params(\"{name}\", dict({call}))\n"
                      f"df = campaign.{name}(**params)\n"
                      'df[["stage", "arm", "seed", "run_id", "status", "final_val_loss"]]'),
    ]
    if "extra" in spec:
        cells.append(new_code_cell(spec["extra"]))
    cells.append(new_code_cell(f'report.show("{name}", preset, campaign.variant_tag("{name}", params))  '
                               "# renders the report file, its tables and plots"))
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
