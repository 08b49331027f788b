"""Campaigns: grids of runs driven by the notebooks in notebooks/, recorded so that reports need only records.

    run_campaign(name, preset, params)   check params, then execute notebooks/<name>.ipynb with papermill
    run_headless(name, preset, **params) the same without papermill/jupyter (a bare GPU box)
    check_params(name, params)           coerce and validate a notebook's parameters (before papermill, and in it)
    verify / lr_sweep / horizon / geodesic / advanced / lazy_projection   one function per campaign

A campaign runs in stages (lab.campaign.Grid). A stage that picks a setting (best lr, best feature) runs its grid on
the selection `seeds`; the chosen arm and its baseline are then rerun on fresh `confirm_seeds` (disjoint), and
reports judge the winner only there. Every choice is written to the manifest with the grid and seeds it came from;
later campaigns read lr_sweep's choices from its default-parameter manifest (a narrowed rerun is a variant, with
its own manifest and report, and redefines nothing).

A run's identity is its config hash (Config.run_id), so a rerun reuses every finished or diverged run (in any
campaign), resumes a partial one and retries a failed one; a run another process is training is skipped (the
campaign stops before choosing from an incomplete stage and says so).
"""
from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import math
import os
import sys
from pathlib import Path

import pandas as pd

from lab import records, report
from lab.config import GEODESIC, WANDB_MODES, get_config
from lab.executor import execute
from lab.results import ROOT, best_arm, choice, grid_edge, manifest_path, read_manifest, results, runs_dir

NOTEBOOKS = ROOT / "notebooks"
CAMPAIGNS = ("verify", "lr_sweep", "horizon", "geodesic", "advanced", "lazy_projection")  # `all`: in this order
ADVANCED_FEATURES = ("newton_schulz", "polar_express", "normuon", "weight_decay", "cautious_wd")
SECONDS_PER_RUN = {"smoke": 2.0, "cpu": 500.0, "h100": 120.0}  # guesses until a preset has finished runs
RUN_OVERHEAD_S = 5.0  # per run outside the training loop (model build, data, evaluations)


class CampaignPending(RuntimeError):
    """A stage cannot choose yet: some of its runs are being trained by another process."""


def notebook_path(name: str) -> Path:
    if name not in CAMPAIGNS:
        raise ValueError(f"unknown campaign {name!r}; valid: {', '.join(CAMPAIGNS)}, all")
    return NOTEBOOKS / f"{name}.ipynb"


# -----------------------------------------------------------------------------------------------------------------
# parameters: declared in the notebook's parameters cell (the one place for defaults), coerced and checked here

def notebook_specs(name: str) -> dict[str, tuple[str, object]]:
    """{parameter: (type name, default)} from the parameters cell, parsed with ast (no kernel, no papermill)."""
    nb = json.loads(notebook_path(name).read_text())
    cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"notebook {name} needs exactly one cell tagged `parameters`, found {len(cells)}")
    src = "".join(cells[0]["source"]) if isinstance(cells[0]["source"], list) else cells[0]["source"]
    out = {}
    for node in ast.parse(src).body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out[node.target.id] = (ast.unparse(node.annotation), ast.literal_eval(node.value))
    return out


def notebook_parameters(name: str) -> dict:
    """The defaults of the notebook's parameters cell."""
    return {k: default for k, (_, default) in notebook_specs(name).items()}


def _coerce_one(value, typ: str):
    """`value` as type `typ` (int, float, str, bool, list[X]); strings (CLI, plain papermill -p) are parsed."""
    typ = typ.replace(" ", "")
    if typ.startswith("list"):
        if isinstance(value, str):
            s = value.strip()
            try:
                value = ast.literal_eval(s if s.startswith(("[", "(")) else f"[{s}]")
            except (ValueError, SyntaxError):
                raise TypeError from None
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise TypeError
        inner = typ[5:-1] if typ.startswith("list[") else None
        return [_coerce_one(v, inner) for v in value] if inner else value
    if isinstance(value, str) and typ in ("int", "float", "bool"):
        s = value.strip().lower()
        try:
            if typ == "bool":
                if s not in ("true", "false", "1", "0", "yes", "no"):
                    raise TypeError
                return s in ("true", "1", "yes")
            if typ == "int" and not float(s).is_integer():
                raise TypeError
            return int(float(s)) if typ == "int" else float(s)  # "300" and "3e2" are ints, "1.5" is not
        except ValueError:
            raise TypeError from None
    if typ == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ == "int" and isinstance(value, float) and value.is_integer():
        return int(value)
    py = {"int": int, "float": float, "str": str, "bool": bool}.get(typ)
    if py is not None and (not isinstance(value, py) or (py is int and isinstance(value, bool))):
        raise TypeError
    return value


# notebook parameter -> the Config field its value(s) set: checked with that field's rules (lab.config.validate)
FIELD_OF = {"seeds": "seed", "confirm_seeds": "seed", "steps": "steps", "budgets": "steps", "lr": "lr",
            "muon_lrs": "lr", "adamw_lr": "adamw_lr", "adamw_lrs": "adamw_lr", "aux_lr": "scalar_lr",
            "aux_lrs": "scalar_lr", "weight_decay": "weight_decay", "frequencies": "project_every"}
ZERO_MEANS_DEFAULT = {"steps", "lr", "adamw_lr", "aux_lr"}  # 0: the preset default or lr_sweep's choice
RESULT_FREE = {"preset", "devices", "wandb"}  # parameters that do not change any number (not part of a variant)


def _check_value(name: str, key: str, value, preset: str) -> None:
    bad = lambda why: ValueError(f"campaign {name}: parameter {key}={value!r} {why}")
    items = value if isinstance(value, list) else [value]
    if isinstance(value, list) and not value:
        raise bad("is empty; give at least one value")
    if isinstance(value, list) and key != "devices" and len(set(map(str, value))) != len(value):
        raise bad("has duplicates")
    if key in FIELD_OF:
        for v in items:
            if key in ZERO_MEANS_DEFAULT and v == 0:
                continue
            try:
                get_config(preset, **{FIELD_OF[key]: v})
            except ValueError as e:
                raise bad(f"is refused: {e}") from None
    elif key == "modes":
        treatments = [m for m in GEODESIC if m != "none"]
        if any(m not in treatments for m in items):
            raise bad(f"has an unknown geodesic mode; valid: {', '.join(treatments)} (projection is the baseline)")
    elif key == "arms":
        for a in items:
            advanced_overrides(a, 0.0)
    elif key == "devices":
        for d in items:
            if not (d in ("auto", "cpu", "cuda") or (d.startswith("cuda:") and d[5:].isdigit())):
                raise bad(f"has device {d!r}; valid: auto, cpu, cuda, cuda:N")
        if len({d.split(":")[0] for d in items}) > 1:
            raise bad("mixes device kinds; use one of cpu, cuda:N or auto")
    elif key == "wandb" and value not in WANDB_MODES:
        raise bad(f"is not a wandb mode; valid: {', '.join(WANDB_MODES)}")


def check_params(name: str, params: dict) -> dict:
    """`params` (strings as typed on the command line or passed by plain `papermill -p`, or Python values) coerced to
    the types of the notebook's parameters cell and checked with the rules of the config fields they set (lists
    non-empty, every lr > 0 and finite, known devices and modes, confirmation seeds disjoint from selection seeds).
    Missing parameters take the notebook's defaults. ValueError names the bad value and what is allowed."""
    specs = notebook_specs(name)
    valid = ", ".join(f"{k}: {t}" for k, (t, _) in specs.items())
    unknown = sorted(set(params) - set(specs))
    if unknown:
        raise ValueError(f"campaign {name}: unknown parameter(s) {unknown}; valid parameters: {valid}")
    out = {k: default for k, (_, default) in specs.items()}
    for k, v in params.items():
        try:
            out[k] = _coerce_one(v, specs[k][0])
        except TypeError:
            raise ValueError(f"campaign {name}: parameter {k}={v!r} is not a {specs[k][0]}; "
                             f"valid parameters: {valid}") from None
    get_config(out["preset"])  # an unknown preset is refused here
    for k, v in out.items():
        _check_value(name, k, v, out["preset"])
    overlap = set(out.get("seeds", [])) & set(out.get("confirm_seeds", []))
    if overlap:
        raise ValueError(f"campaign {name}: confirm_seeds share {sorted(overlap)} with seeds; confirmation seeds "
                         "must be fresh (disjoint from the selection seeds that picked the winner)")
    return out


def variant_tag(name: str, params: dict) -> str:
    """'' for the notebook's default parameters, else a short hash of the result-changing parameters that differ."""
    defaults = notebook_parameters(name)
    diff = {k: v for k, v in params.items() if k not in RESULT_FREE and v != defaults.get(k)}
    return hashlib.sha1(json.dumps(diff, sort_keys=True).encode()).hexdigest()[:6] if diff else ""


def run_campaign(name: str, preset: str = "cpu", params: dict | None = None) -> Path:
    """Check the parameters, then execute notebooks/<name>.ipynb with papermill into
    runs/<preset>/campaigns/<name>[-<tag>].ipynb (not committed); the notebook renders the report.

    `name == "all"` runs every campaign in order; a parameter then goes to each notebook that declares it, and
    every notebook's share is checked before the first one runs.
    """
    params = dict(params or {})
    if "preset" in params:
        raise ValueError("campaign: give the preset with --preset, not as a parameter")
    if name == "all":
        declared = {k for n in CAMPAIGNS for k in notebook_specs(n)}
        unknown = sorted(set(params) - declared)
        if unknown:
            raise ValueError(f"campaign all: unknown parameter(s) {unknown}; valid parameters: {sorted(declared)}")
        shares = {n: {k: v for k, v in params.items() if k in notebook_specs(n)} for n in CAMPAIGNS}
        for n in CAMPAIGNS:
            check_params(n, {**shares[n], "preset": preset})
        out = None
        for n in CAMPAIGNS:
            out = run_campaign(n, preset, shares[n])
        return out
    values = check_params(name, {**params, "preset": preset})  # refused here, before papermill starts
    import papermill as pm  # lazily: run_headless and the grid functions work without it
    tag = variant_tag(name, values)
    out = manifest_path(name, preset, tag).with_suffix(".ipynb")
    out.parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ.setdefault("WANDB_NOTEBOOK_NAME", f"{name}.ipynb")
    given = {k: values[k] for k in params}
    print(f"[lab] campaign {name} (preset {preset}{', variant ' + tag if tag else ''}) {given or ''} -> {out}",
          flush=True)
    try:
        pm.execute_notebook(str(notebook_path(name)), str(out), parameters=values, kernel_name="python3",
                            language="python", cwd=str(ROOT), progress_bar=False, stdout_file=sys.stdout,
                            stderr_file=sys.stderr, kernel_manager_class="lab.kernel.QuietKernelManager")
    except pm.PapermillExecutionError as e:
        if e.ename == "CampaignPending":
            raise CampaignPending(e.evalue) from None
        raise RuntimeError(f"campaign {name}: cell {e.exec_count} raised {e.ename}: {e.evalue} "
                           f"(the executed notebook with the traceback: {out})") from e
    return out


def run_headless(name: str, preset: str = "cpu", **params) -> pd.DataFrame:
    """Run a campaign's grid and render its report without papermill or jupyter (same defaults as the notebook)."""
    values = check_params(name, {**params, "preset": preset})
    df = CAMPAIGN_FUNCTIONS[name](**values)
    report.render_report(name, preset, variant_tag(name, values))
    return df


# -----------------------------------------------------------------------------------------------------------------
# running a grid: stages of arms x seeds, recorded in the manifest as they are run

def _device_override(device: str) -> dict:
    """Config fields that pin `device`. Identity keeps only the device type, and only where it differs from what
    device=auto picks here, so the same grid on ["cuda:0"] or ["cuda:0", "cuda:1"] (or ["cpu"] on a CPU box) reuses
    the same runs."""
    if device == "auto":
        return {}
    import torch
    kind = device.split(":")[0]
    return {} if kind == ("cuda" if torch.cuda.is_available() else "cpu") else {"device": kind}






def _seconds_per_step(preset: str) -> float | None:
    """Mean training seconds per step over the finished runs of `preset`."""
    wall = steps = 0.0
    for p in runs_dir(preset).glob("*/summary.json"):
        try:
            s = records.read_json(p)
        except records.CorruptRecord:
            continue
        if s.get("status") == "finished" and s.get("wall_time_s") and s.get("steps"):
            wall, steps = wall + s["wall_time_s"], steps + s["steps"]
    return wall / steps if steps else None


def _final(config) -> bool:
    try:
        s = records.read_summary(Path(config.runs_dir) / config.run_id())
    except records.CorruptRecord:
        return False
    return bool(s) and s["status"] in records.FINAL


class Grid:
    """One execution of a campaign: its manifest, written before and after every stage, so an interrupted campaign
    can be reported and resumed. A manifest holds the parameters, `runs` (stage, arm, seed, run id, overrides) and
    `choices` (what each stage picked, on which seeds, from which grid)."""

    def __init__(self, name: str, params: dict):
        self.name, self.preset = name, params["preset"]
        self.devices = list(params.get("devices") or ["auto"])
        self.tag = variant_tag(name, params)
        pin = _device_override(self.devices[0])
        self.base = {**pin, "wandb": params.get("wandb", "disabled")}
        rd = runs_dir(self.preset)
        # runs_dir as the config records it: relative to the repo root when inside it (campaigns run from there)
        self.runs_dir = os.path.relpath(rd, ROOT) if rd.absolute().is_relative_to(ROOT) else str(rd)
        self.m = {"campaign": name, "preset": self.preset, "variant": self.tag or None,
                  "params": {k: v for k, v in params.items() if k not in RESULT_FREE}, "base": self.base,
                  "choices": [], "runs": []}
        self.save()

    def save(self) -> None:
        records.write_json(manifest_path(self.name, self.preset, self.tag), self.m)

    def run(self, stage: str, arms: dict[str, dict], seeds) -> pd.DataFrame:
        """Run every arm (label -> config overrides) x seed of `stage` that has no final record; return this stage's
        rows of results(). Configs are built (and refused) before any training."""
        configs = []
        for label, overrides in arms.items():
            for seed in seeds:
                cfg = get_config(self.preset, **{**self.base, **overrides, "seed": int(seed), "campaign": self.name,
                                                 "runs_dir": self.runs_dir})
                self.m["runs"].append({"stage": stage, "arm": label, "seed": int(seed), "run_id": cfg.run_id(),
                                       "overrides": overrides})
                configs.append(cfg)
        self.save()
        todo = list({c.run_id(): c for c in configs if not _final(c)}.values())
        sps = _seconds_per_step(self.preset)
        est = (sum(c.steps * sps + RUN_OVERHEAD_S for c in todo) if sps
               else len(todo) * SECONDS_PER_RUN.get(self.preset, 60.0)) / len(self.devices)
        print(f"[lab] {self.name} ({self.preset}) stage {stage}: {len(configs)} runs in {len(arms)} arms x "
              f"{len(seeds)} seeds, {len(todo)} to train, expected {_duration(est)} "
              f"({f'{sps:.3f} s/step from finished {self.preset} runs' if sps else 'a guess'}, "
              f"{len(self.devices)} device(s))", flush=True)
        if todo:
            with contextlib.chdir(ROOT):  # relative paths in configs (runs_dir, data_dir) mean the repo root
                execute(todo, self.devices, f"{self.name}/{stage}")
        df = results(self.name, self.preset, m=self.m)
        df = df[df.stage == stage]
        busy = df[df.status == "running"]
        if len(busy):
            raise CampaignPending(f"{self.name}: {busy.run_id.nunique()} run(s) of stage {stage} are being trained "
                                  "by another process; rerun the campaign when they finish (nothing is lost)")
        return df

    def choose(self, key: str, value, stage: str, seeds, grid: list, why: str):
        """Record a choice (and return its value): what was picked, from which grid, on which seeds, and why."""
        self.m["choices"] = [c for c in self.m["choices"] if c["key"] != key] + [
            {"key": key, "value": value, "stage": stage, "seeds": [int(s) for s in seeds], "grid": grid, "why": why}]
        self.save()
        print(f"[lab] {self.name}: {key} = {value} ({why})", flush=True)
        return value

    def pick(self, df: pd.DataFrame, key: str, stage: str, seeds, arms: dict[str, object], what: str):
        """Choose among `arms` ({label: value}) the value of the arm with the lowest mean final val loss."""
        best = best_arm(df[df.arm.isin(list(arms))])
        if best is None:
            raise RuntimeError(f"{self.name}: no arm of stage {stage} finished, so no {what} can be chosen "
                               f"(see the failed runs in {manifest_path(self.name, self.preset, self.tag)})")
        return self.choose(key, arms[best], stage, seeds, list(arms.values()),
                           f"the {what} with the lowest mean final val loss on seeds {list(seeds)}")

    def run_grids(self, stage: str, grids: dict, arm, name, seeds) -> tuple[pd.DataFrame, dict]:
        """Run a value grid per group ({group: [values]}; arm(group, x) -> overrides, name(group, x) -> label); while
        a group's best value sits on an edge of its grid, add the next value past that edge (x/2 or 2x, at most
        EXTEND_EDGES times per group), so a pick is an optimum, not a boundary. Returns this stage's rows and the
        final grids ({group: {label: value}}, ascending)."""
        grids = {k: sorted(v) for k, v in grids.items()}
        df = self.run(stage, {name(k, x): arm(k, x) for k, xs in grids.items() for x in xs}, seeds)
        for _ in range(EXTEND_EDGES):
            new = {}
            for k, xs in grids.items():
                best = best_arm(df[df.arm.isin([name(k, x) for x in xs])])
                x = beyond_edge(xs, next((x for x in xs if name(k, x) == best), None))
                if x is not None:
                    grids[k] = sorted([*xs, x])
                    new[name(k, x)] = arm(k, x)
            if not new:
                break
            df = self.run(stage, new, seeds)
        return df, {k: {name(k, x): x for x in xs} for k, xs in grids.items()}

    def results(self) -> pd.DataFrame:
        return results(self.name, self.preset, m=self.m)


def _duration(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


# -----------------------------------------------------------------------------------------------------------------
# settings from lr_sweep, and grids around them

def tuned(grid: Grid, lr: float = 0.0, aux_lr: float = 0.0, adamw_lr: float = 0.0) -> dict:
    """The tuned hybrid Muon (lr, aux lr) and AdamW (lr) for a later campaign: a given (non-zero) value wins, else
    lr_sweep's choice at this preset (from its default-parameter manifest), else the preset default. Each source is
    recorded as a choice of `grid` (stage "upstream"), so the report can say where every setting came from."""
    up = None
    with contextlib.suppress(records.CorruptRecord):
        up = read_manifest("lr_sweep", grid.preset)
    default = get_config(grid.preset)
    out = {}
    for key, given, field in (("muon_lr", lr, "lr"), ("aux_lr", aux_lr, "scalar_lr"), ("adamw_lr", adamw_lr,
                                                                                        "adamw_lr")):
        c = choice(up, key)
        if given:
            value, why = float(given), "given as a parameter"
        elif c is not None:
            value = c["value"]
            why = (f"lr_sweep's choice at preset {grid.preset} ({c['why']}; stage {c['stage']}, grid "
                   f"{c['grid']})")
        else:
            value = getattr(default, field)
            why = (f"the {grid.preset} preset default: lr_sweep has not chosen it at this preset yet "
                   "(run lr_sweep first for a tuned value)")
        out[key] = grid.choose(key, value, "upstream", [], [], why)
    return out


def around(x: float) -> list[float]:
    """The small grid [x/2, x, 2x] around a tuned value (neighbours on a factor-2 grid)."""
    return [x / 2, x, 2 * x]


EXTEND_EDGES = 2  # values added past a winning grid edge (factor 2 each): the optimum, not the boundary, is picked


def beyond_edge(grid: list[float], best: float | None) -> float | None:
    """The next value (factor 2) past the edge of `grid` that `best` sits on; None when it is inside (or missing)."""
    side = grid_edge(grid, best)
    return min(grid) / 2 if side == "lowest" else 2 * max(grid) if side == "highest" else None


def muon(lr: float, aux: float, **kw) -> dict:
    """Config overrides of the hybrid Muon arm: Muon lr for hidden matrices, one aux lr for its AdamW groups."""
    return {"optimizer": "muon", "lr": float(lr), "embed_lr": float(aux), "head_lr": float(aux),
            "scalar_lr": float(aux), **kw}


def adamw(lr: float, **kw) -> dict:
    return {"optimizer": "adamw", "adamw_lr": float(lr), **kw}


def _steps(steps: int) -> dict:
    return {"steps": int(steps)} if steps else {}


# -----------------------------------------------------------------------------------------------------------------
# the campaigns (each notebook calls one of these with its checked parameters)

def verify(*, preset, seeds, steps, lr, devices, wandb) -> pd.DataFrame:
    """One hybrid Muon run end to end, plus the singular values of one orthogonalized real gradient."""
    g = Grid("verify", dict(preset=preset, seeds=seeds, steps=steps, lr=lr, devices=devices, wandb=wandb))
    lr = lr or get_config(preset).lr
    g.run("run", {f"muon lr={lr:g}": {"optimizer": "muon", "lr": lr, **_steps(steps)}}, seeds)
    cfg = get_config(preset, **_steps(steps), lr=lr, seed=int(seeds[0]))
    path = manifest_path("verify", preset, g.tag).with_suffix(".checks.json")
    old = None
    with contextlib.suppress(FileNotFoundError, records.CorruptRecord):
        old = records.read_json(path)
    if not old or old.get("run_id") != cfg.run_id():  # measured once per config, like a run: reruns reuse it
        with contextlib.chdir(ROOT):
            records.write_json(path, {"run_id": cfg.run_id(), **orthogonality_check(cfg)})
    return g.results()


def orthogonality_check(config) -> dict:
    """Singular values of one hidden matrix's real gradient before and after each orthogonalizer (bf16, as Muon
    runs it on a GPU) at initialization: orthogonalized, those in the design range should sit near 1."""
    import torch

    from lab.data import load_data
    from lab.models import build_model
    from lab.optim.orthogonalize import newton_schulz, polar_express
    from lab.optim.setup import routing_table
    from lab.train import resolve_device
    device = resolve_device(config)
    torch.manual_seed(config.seed)
    model = build_model(config).to(device)
    x, y = (t[:8].to(device) for t in load_data(config).train_batch(0, 0))  # up to 8 sequences: a real gradient
    model(x, y)[1].backward()
    name = next(r["name"] for r in routing_table(model, config) if r["optimizer"] == "muon")
    G = dict(model.named_parameters())[name].grad.detach().float().cpu()
    g_sv = torch.linalg.svdvals(G / G.norm())  # descending
    k = int((g_sv >= 1e-3).sum())  # directions inside the design range of the orthogonalizers (sigma >= 1e-3)
    out = {"param": name, "shape": list(G.shape), "signal_dirs": k, "dirs": len(g_sv)}
    for label, O in (("gradient", G / G.norm()), ("newton_schulz", newton_schulz(G.bfloat16(), config.ns_steps)),
                     ("polar_express", polar_express(G.bfloat16(), config.ns_steps))):
        sv = torch.linalg.svdvals(O.float())
        top = sv[:k]  # odd polynomials are monotone on [0, 1]: the top k outputs are the images of those k inputs
        out[label] = {"min": sv.min().item(), "median": sv.median().item(), "max": sv.max().item(),
                      "signal_min": top.min().item(), "signal_max": top.max().item()}
    return out


def lr_sweep(*, preset, seeds, confirm_seeds, muon_lrs, adamw_lrs, aux_lrs, steps, devices,
             wandb) -> pd.DataFrame:
    """Tune both arms, then compare them on fresh seeds:
    select   Muon peak lr (its AdamW groups at the preset's aux lr) and AdamW lr, each on its own grid
    aux      the hybrid's AdamW groups (embedding, head, scalars: one shared aux lr) at the best Muon lr
    confirm  tuned Muon vs tuned AdamW on the confirmation seeds (the headline)"""
    g = Grid("lr_sweep", dict(preset=preset, seeds=seeds, confirm_seeds=confirm_seeds, muon_lrs=muon_lrs,
                              adamw_lrs=adamw_lrs, aux_lrs=aux_lrs, steps=steps, devices=devices, wandb=wandb))
    aux0, s = get_config(preset).scalar_lr, _steps(steps)
    m_arms = {f"muon lr={lr:g}": lr for lr in muon_lrs}
    a_arms = {f"adamw lr={lr:g}": lr for lr in adamw_lrs}
    df = g.run("select", {**{k: muon(v, aux0, **s) for k, v in m_arms.items()},
                          **{k: adamw(v, **s) for k, v in a_arms.items()}}, seeds)
    lr = g.pick(df, "muon_lr", "select", seeds, m_arms, "Muon lr")
    adamw_lr = g.pick(df, "adamw_lr", "select", seeds, a_arms, "AdamW lr")
    x_arms = {f"muon lr={lr:g} aux={a:g}": a for a in aux_lrs}
    df = g.run("aux", {k: muon(lr, v, **s) for k, v in x_arms.items()}, seeds)
    aux = g.pick(df, "aux_lr", "aux", seeds, x_arms, "aux lr")
    g.run("confirm", {f"muon lr={lr:g} aux={aux:g}": muon(lr, aux, **s),
                      f"adamw lr={adamw_lr:g}": adamw(adamw_lr, **s)}, confirm_seeds)
    return g.results()


def horizon(*, preset, seeds, confirm_seeds, budgets, lr, aux_lr, adamw_lr, devices, wandb) -> pd.DataFrame:
    """Muon vs AdamW across training budgets: at each budget each optimizer's lr is chosen on [x/2, x, 2x] around its
    tuned (lr_sweep) value on the selection seeds (extended past a winning edge), then the chosen arms run on the
    confirmation seeds."""
    g = Grid("horizon", dict(preset=preset, seeds=seeds, confirm_seeds=confirm_seeds, budgets=budgets, lr=lr,
                             aux_lr=aux_lr, adamw_lr=adamw_lr, devices=devices, wandb=wandb))
    t = tuned(g, lr, aux_lr, adamw_lr)
    preset_steps = get_config(preset).steps
    order = sorted(budgets, key=lambda b: (b != preset_steps, b))  # the preset's own budget first (mostly reused)
    tuned_lr = {"muon": t["muon_lr"], "adamw": t["adamw_lr"]}
    df, grids = g.run_grids(
        "select", {(b, opt): around(tuned_lr[opt]) for b in order for opt in ("muon", "adamw")},
        lambda k, x: muon(x, t["aux_lr"], steps=k[0]) if k[1] == "muon" else adamw(x, steps=k[0]),
        lambda k, x: f"{k[1]} steps={k[0]} lr={x:g}", seeds)
    chosen = {b: (g.pick(df, f"muon_lr@{b}", "select", seeds, grids[(b, "muon")], f"Muon lr at {b} steps"),
                  g.pick(df, f"adamw_lr@{b}", "select", seeds, grids[(b, "adamw")], f"AdamW lr at {b} steps"))
              for b in order}
    g.run("confirm", {k: v for b in order for k, v in (
        (f"muon steps={b}", muon(chosen[b][0], t["aux_lr"], steps=b)),
        (f"adamw steps={b}", adamw(chosen[b][1], steps=b)))}, confirm_seeds)
    return g.results()


def geodesic(*, preset, seeds, confirm_seeds, modes, lr, aux_lr, steps, devices, wandb) -> pd.DataFrame:
    """Projection (ambient step, then renormalize) vs exact geodesic steps (theta = lr or lr*||T||), at matched step
    size by tuning: every mode gets its own lr grid [x/2, x, 2x] around the tuned Muon lr (selection seeds; extended
    past a winning edge); the best geodesic (mode, lr) and projection at its best lr are then compared on the
    confirmation seeds."""
    g = Grid("geodesic", dict(preset=preset, seeds=seeds, confirm_seeds=confirm_seeds, modes=modes, lr=lr,
                              aux_lr=aux_lr, steps=steps, devices=devices, wandb=wandb))
    t, s = tuned(g, lr, aux_lr), _steps(steps)
    name = lambda m: "projection" if m == "none" else f"geodesic {m}"
    df, grids = g.run_grids("select", {m: around(t["muon_lr"]) for m in ["none", *modes]},
                            lambda m, x: muon(x, t["aux_lr"], geodesic=m, **s), lambda m, x: f"{name(m)} lr={x:g}",
                            seeds)
    best = {m: g.pick(df, f"lr[{m}]", "select", seeds, gr, f"lr of {name(m)}") for m, gr in grids.items()}
    tm = {f"{name(m)} lr={best[m]:g}": m for m in modes}
    mode = g.pick(df, "geodesic_mode", "select", seeds, tm, "geodesic mode (each at its own best lr)")
    g.run("confirm", {f"projection lr={best['none']:g}": muon(best["none"], t["aux_lr"], **s),
                      f"geodesic {mode} lr={best[mode]:g}": muon(best[mode], t["aux_lr"], geodesic=mode, **s)},
          confirm_seeds)
    return g.results()


def advanced_overrides(arm: str, weight_decay: float) -> dict:
    """'polar_express+normuon+cautious_wd' -> config overrides. newton_schulz alone is plain Muon (the baseline)."""
    parts = arm.split("+")
    bad = [p for p in parts if p not in ADVANCED_FEATURES]
    if bad:
        raise ValueError(f"advanced: unknown feature(s) {bad} in arm {arm!r}; valid: {', '.join(ADVANCED_FEATURES)} "
                         "joined with +")
    o = {"orthogonalizer": "polar_express" if "polar_express" in parts else "newton_schulz",
         "normuon": "normuon" in parts, "cautious_wd": "cautious_wd" in parts, "weight_decay": 0.0}
    if "weight_decay" in parts or "cautious_wd" in parts:
        o["weight_decay"] = float(weight_decay)
    return o


def advanced(*, preset, seeds, confirm_seeds, arms, weight_decay, lr, aux_lr, steps, devices,
             wandb) -> pd.DataFrame:
    """Polar Express, NorMuon, cautious weight decay (vs plain decay at the same strength) and combinations at the
    tuned hybrid Muon (selection seeds); the best arm and plain Muon are then compared on the confirmation seeds."""
    g = Grid("advanced", dict(preset=preset, seeds=seeds, confirm_seeds=confirm_seeds, arms=arms,
                              weight_decay=weight_decay, lr=lr, aux_lr=aux_lr, steps=steps, devices=devices,
                              wandb=wandb))
    t, s = tuned(g, lr, aux_lr), _steps(steps)
    grid = {a: muon(t["muon_lr"], t["aux_lr"], **advanced_overrides(a, weight_decay), **s)
            for a in ["newton_schulz", *[a for a in arms if a != "newton_schulz"]]}
    df = g.run("select", grid, seeds)
    best = g.pick(df, "best_arm", "select", seeds, {a: a for a in grid if a != "newton_schulz"},
                  "feature combination")
    g.run("confirm", {"newton_schulz": grid["newton_schulz"], best: grid[best]}, confirm_seeds)
    return g.results()


def lazy_projection(*, preset, seeds, confirm_seeds, frequencies, lr, aux_lr, adamw_lr, steps, devices,
                    wandb) -> pd.DataFrame:
    """Project onto the sphere every N-th step, for tuned Muon and tuned AdamW (selection seeds). On the
    confirmation seeds: Muon's best N against N=1, and the laziness interaction (Muon@N - Muon@1) - (AdamW@N -
    AdamW@1) at the N where Muon gained most over AdamW on the selection seeds."""
    g = Grid("lazy_projection", dict(preset=preset, seeds=seeds, confirm_seeds=confirm_seeds,
                                     frequencies=frequencies, lr=lr, aux_lr=aux_lr, adamw_lr=adamw_lr, steps=steps,
                                     devices=devices, wandb=wandb))
    t, s = tuned(g, lr, aux_lr, adamw_lr), _steps(steps)
    ks = [1, *[k for k in frequencies if k != 1]]
    m = lambda k: muon(t["muon_lr"], t["aux_lr"], project_every=int(k), **s)
    a = lambda k: adamw(t["adamw_lr"], project_every=int(k), **s)
    df = g.run("select", {**{f"muon every={k}": m(k) for k in ks}, **{f"adamw every={k}": a(k) for k in ks}}, seeds)
    best = g.pick(df, "muon_every", "select", seeds, {f"muon every={k}": k for k in ks}, "Muon projection interval")
    mean = lambda arm: df[(df.arm == arm) & (df.status == "finished")].final_val_loss.astype(float).mean()
    inter = {k: (mean(f"muon every={k}") - mean("muon every=1")) - (mean(f"adamw every={k}") - mean("adamw every=1"))
             for k in ks[1:]}
    finite = {k: v for k, v in inter.items() if math.isfinite(v)}
    k_int = min(finite, key=finite.get) if finite else ks[-1]
    g.choose("interaction_every", k_int, "select", seeds, ks[1:],
             "the interval with the most negative mean laziness interaction on the selection seeds")
    conf = {f"muon every={k}": m(k) for k in dict.fromkeys([1, best, k_int])}
    conf |= {f"adamw every={k}": a(k) for k in dict.fromkeys([1, k_int])}
    g.run("confirm", conf, confirm_seeds)
    return g.results()


CAMPAIGN_FUNCTIONS = {"verify": verify, "lr_sweep": lr_sweep, "horizon": horizon, "geodesic": geodesic,
                      "advanced": advanced, "lazy_projection": lazy_projection}
