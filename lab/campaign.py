"""Campaigns: grids of runs (arms x seeds) driven by the notebooks in notebooks/, recorded so reports need only records.

    run_campaign(name, preset, params)  validate params against the notebook's parameters cell, execute it (papermill)
    run_headless(name, preset, ...)     the same grid without papermill/jupyter (a bare GPU box)
    verify / lr_sweep / geodesic / advanced / lazy_projection   one function per campaign: its grid (the notebooks
                                        call these with their parameters)
    run_arms(campaign, preset, arms, seeds, ...)   write the manifest, run what is missing, return one row per run
    best_setting(campaign, preset, key, where)     what a later campaign reads from an earlier one

A run's identity is its config hash (Config.run_id), so a rerun reuses every finished or diverged run, resumes
a partial one from its checkpoint and retries a failed one. The manifest runs/campaigns/<campaign>-<preset>.json
lists arm, seed, run id and overrides of the latest grid of a campaign: a report is rendered from it and the run
directories alone. LAB_RUNS_DIR / LAB_REPORTS_DIR move runs/ and reports/ (tests point them at tmp dirs).
"""
from __future__ import annotations

import ast
import contextlib
import math
import os
import sys
import traceback
from pathlib import Path

import pandas as pd

from lab import records
from lab.config import get_config

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
CAMPAIGNS = ("verify", "lr_sweep", "geodesic", "advanced", "lazy_projection")  # `all` runs them in this order
SECONDS_PER_RUN = {"smoke": 2.0, "cpu": 60.0, "h100": 60.0}  # guesses until a preset has finished runs
RUN_OVERHEAD_S = 2.0  # per run outside the training loop (model build, data, evaluation)
ADVANCED_FEATURES = ("newton_schulz", "polar_express", "normuon", "weight_decay", "cautious_wd")


def runs_dir() -> Path:
    return Path(os.environ.get("LAB_RUNS_DIR") or ROOT / "runs")


def reports_dir() -> Path:
    return Path(os.environ.get("LAB_REPORTS_DIR") or ROOT / "reports")


def manifest_path(campaign: str, preset: str) -> Path:
    return runs_dir() / "campaigns" / f"{campaign}-{preset}.json"


def notebook_path(name: str) -> Path:
    if name not in CAMPAIGNS:
        raise ValueError(f"unknown campaign {name!r}; valid: {', '.join(CAMPAIGNS)}, all")
    return NOTEBOOKS / f"{name}.ipynb"


# -----------------------------------------------------------------------------------------------------------------
# parameters: read from the notebook's parameters cell, CLI strings coerced to the declared types

def _parameters_source(name: str) -> str:
    import json
    nb = json.loads(notebook_path(name).read_text())
    cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"notebook {name} needs exactly one cell tagged `parameters`, found {len(cells)}")
    src = cells[0]["source"]
    return "".join(src) if isinstance(src, list) else src


def notebook_specs(name: str) -> dict[str, tuple[str, object]]:
    """{parameter: (type name, default)} from the parameters cell, parsed with ast (no kernel, no papermill)."""
    out = {}
    for node in ast.parse(_parameters_source(name)).body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out[node.target.id] = (ast.unparse(node.annotation), ast.literal_eval(node.value))
        elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            out[node.targets[0].id] = ("None", ast.literal_eval(node.value))
    return out


def notebook_parameters(name: str) -> dict:
    """The defaults of the notebook's parameters cell."""
    return {k: default for k, (_, default) in notebook_specs(name).items()}


def _coerce_one(value, typ: str):
    """`value` as type `typ` (int, float, str, bool, list, list[X], dict); CLI strings are parsed. Raises TypeError."""
    typ = typ.replace(" ", "")
    if typ.startswith("list"):
        if isinstance(value, str):
            try:
                value = ast.literal_eval(value.strip() if value.strip().startswith(("[", "(")) else f"[{value}]")
            except (ValueError, SyntaxError):
                raise TypeError from None
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise TypeError
        inner = typ[5:-1] if typ.startswith("list[") else None
        return [_coerce_one(v, inner) for v in value] if inner else value
    if typ == "dict":
        value = ast.literal_eval(value) if isinstance(value, str) else value
        if not isinstance(value, dict):
            raise TypeError
        return value
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
    py = {"int": int, "float": float, "str": str, "bool": bool}.get(typ)
    if py is not None and (not isinstance(value, py) or (py is int and isinstance(value, bool))):
        raise TypeError
    return value


def coerce_params(name: str, params: dict, types: dict[str, str]) -> dict:
    """Check names against `types` ({name: type name}) and coerce values; ValueError lists the valid parameters."""
    valid = ", ".join(f"{k}: {t}" for k, t in types.items())
    unknown = sorted(set(params) - set(types))
    if unknown:
        raise ValueError(f"campaign {name}: unknown parameter(s) {unknown}; valid parameters: {valid}")
    out = {}
    for k, v in params.items():
        try:
            out[k] = _coerce_one(v, types[k])
        except TypeError:
            raise ValueError(f"campaign {name}: parameter {k}={v!r} is not a {types[k]}; "
                             f"valid parameters: {valid}") from None
    return out


def run_campaign(name: str, preset: str = "cpu", params: dict | None = None) -> Path:
    """Execute notebooks/<name>.ipynb with papermill to runs/campaigns/<name>-<preset>.ipynb (it renders the report).

    `name == "all"` runs every campaign in order; a parameter then goes to each notebook that declares it.
    Parameter names and types are checked against the parameters cell before anything runs.
    """
    params = dict(params or {})
    get_config(preset)  # an unknown preset is refused here
    if "preset" in params:
        raise ValueError("campaign: give the preset with preset=/--preset, not as a parameter")
    if name == "all":
        declared = {k for n in CAMPAIGNS for k in notebook_specs(n)} - {"preset"}
        unknown = sorted(set(params) - declared)
        if unknown:
            raise ValueError(f"campaign all: unknown parameter(s) {unknown}; valid parameters: {sorted(declared)}")
        for n in CAMPAIGNS:  # validate every notebook's share before the first one runs
            coerce_params(n, {k: v for k, v in params.items() if k in notebook_specs(n)},
                          {k: t for k, (t, _) in notebook_specs(n).items()})
        out = None
        for n in CAMPAIGNS:
            out = run_campaign(n, preset, {k: v for k, v in params.items() if k in notebook_specs(n)})
        return out
    import papermill as pm  # lazily: run_headless and the grid functions work without it
    nb = notebook_path(name)
    types = {k: v["inferred_type_name"] for k, v in pm.inspect_notebook(str(nb)).items() if k != "preset"}
    values = coerce_params(name, params, types)
    out = runs_dir() / "campaigns" / f"{name}-{preset}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ.setdefault("WANDB_NOTEBOOK_NAME", f"{name}.ipynb")
    print(f"[lab] campaign {name} (preset {preset}) {values or ''} -> {out}", flush=True)
    try:
        pm.execute_notebook(str(nb), str(out), parameters={**values, "preset": preset}, kernel_name="python3",
                            language="python", cwd=str(ROOT), progress_bar=False,
                            stdout_file=sys.stdout, stderr_file=sys.stderr)
    except pm.PapermillExecutionError as e:
        raise RuntimeError(f"campaign {name}: cell {e.exec_count} raised {e.ename}: {e.evalue} "
                           f"(the executed notebook with the traceback: {out})") from e
    return out


def run_headless(name: str, preset: str = "cpu", devices: list | None = None, **params) -> pd.DataFrame:
    """Run a campaign's grid and render its report without papermill or jupyter (same defaults as the notebook)."""
    from lab import report
    specs = notebook_specs(name)
    if devices is not None:
        params["devices"] = devices
    types = {k: t for k, (t, _) in specs.items() if k != "preset"}
    values = {**notebook_parameters(name), **coerce_params(name, params, types)}
    values["preset"] = preset
    df = CAMPAIGN_FUNCTIONS[name](**values)
    report.render_report(name, preset=preset)
    return df


# -----------------------------------------------------------------------------------------------------------------
# running a grid

def _train(config, progress: bool = False) -> dict:
    from lab.train import train  # imported when needed (tests patch this function)
    return train(config, progress=progress)


def _device_override(device: str) -> dict:
    """Config fields that pin `device`. Identity keeps only the device type, and only where it differs from what
    device=auto picks here, so the same grid on ["cuda:0"] or ["cuda:0", "cuda:1"] (or ["cpu"] on a CPU box) reuses
    the same runs."""
    if device == "auto":
        return {}
    import torch
    kind = device.split(":")[0]
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"campaign: device {device!r}; valid: auto, cpu, cuda, cuda:N")
    return {} if kind == ("cuda" if torch.cuda.is_available() else "cpu") else {"device": kind}


def _record_failure(config, exc: BaseException) -> dict:
    """Make sure a run that raised has a summary saying so (train writes one unless it failed before starting)."""
    run_dir = Path(config.runs_dir) / config.run_id()
    s = records.read_summary(run_dir)
    if s is None or s.get("status") != "failed":
        s = {"run_id": config.run_id(), "status": "failed", "campaign": config.campaign, "steps": 0,
             "final_val_loss": None, "best_val_loss": None, "error": f"{type(exc).__name__}: {exc}\n"
             f"{''.join(traceback.format_exception(exc))}"}
        records.write_json(run_dir / "summary.json", s)
    return s


def _run_config(cfg_dict: dict) -> dict:
    """Train one config given as a dict; a failure is recorded and returned, never raised."""
    from lab.config import Config
    config = Config(**{**cfg_dict, "adam_betas": tuple(cfg_dict["adam_betas"])})
    try:
        return _train(config, progress=False)
    except Exception as e:  # noqa: BLE001 - a failed run is a record, the campaign goes on
        s = _record_failure(config, e)
        print(f"[lab] run {config.run_id()} failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return s


def _init_worker(device_queue, threads: int) -> None:
    import torch
    torch.set_num_threads(threads)
    device = device_queue.get()
    if device.startswith("cuda:"):
        torch.cuda.set_device(int(device.split(":")[1]))


def _seconds_per_step(preset: str) -> float | None:
    """Mean training seconds per step over finished runs of `preset` listed in any manifest."""
    wall = steps = 0.0
    for m in (runs_dir() / "campaigns").glob(f"*-{preset}.json"):
        for row in records.read_json(m).get("runs", []):
            s = records.read_summary(runs_dir() / row["run_id"])
            if s and s["status"] == "finished" and s.get("wall_time_s") and s.get("steps"):
                wall, steps = wall + s["wall_time_s"], steps + s["steps"]
    return wall / steps if steps else None


def run_arms(campaign: str, preset: str, arms: dict[str, dict], seeds, devices=("auto",), base: dict | None = None,
             progress: bool = True, notes: list[str] | None = None) -> pd.DataFrame:
    """Run every arm (label -> config overrides) x seed that has no final record; return results(campaign, preset).

    Writes the manifest first (so an interrupted campaign can be reported and resumed), then trains what is
    missing: in this process for one device, else one spawned worker per device. A run that raises is recorded
    as failed and the campaign goes on; a diverged run is recorded as diverged.
    """
    base, devices = dict(base or {}), list(devices)
    kinds = {d.split(":")[0] for d in devices}
    if not devices or len(kinds) > 1:
        raise ValueError(f"campaign: devices={devices} must be a non-empty list of one kind (cpu, cuda:N or auto)")
    pin = _device_override(devices[0])
    rows, configs = [], []
    for label, overrides in arms.items():
        for seed in seeds:
            cfg = get_config(preset, **{**pin, **base, **overrides, "seed": int(seed), "campaign": campaign,
                                        "runs_dir": str(runs_dir())})  # refused here, before any work
            rows.append({"arm": label, "seed": int(seed), "run_id": cfg.run_id(), "overrides": overrides})
            configs.append(cfg)
    records.write_json(manifest_path(campaign, preset), {
        "campaign": campaign, "preset": preset, "base": {**pin, **base}, "notes": list(notes or []), "runs": rows})
    todo, seen = [], set()
    for cfg in configs:
        s = records.read_summary(Path(cfg.runs_dir) / cfg.run_id())
        if not (s and s["status"] in records.FINAL) and cfg.run_id() not in seen:
            todo.append(cfg)
            seen.add(cfg.run_id())
    sps = _seconds_per_step(preset)
    est = (sum(c.steps * sps + RUN_OVERHEAD_S for c in todo) if sps
           else len(todo) * SECONDS_PER_RUN.get(preset, 60.0)) / len(devices)
    basis = (f"{sps:.3f} s/step from finished {preset} runs + {RUN_OVERHEAD_S:g} s/run start-up" if sps
             else f"a guess of {SECONDS_PER_RUN.get(preset, 60.0):g} s/run")
    print(f"[lab] {campaign} ({preset}): {len(configs)} runs in {len(arms)} arms x {len(seeds)} seeds, "
          f"{len(todo)} to train, expected {f'{est:.0f} s' if est < 120 else f'{est / 60:.1f} min'} "
          f"({basis}, {len(devices)} device(s))", flush=True)
    if todo:
        with contextlib.chdir(ROOT):  # relative paths in configs (data_dir) mean the repo root, as for the CLI
            _execute(todo, devices, progress, campaign)
    return results(campaign, preset)


def _execute(todo: list, devices: list[str], progress: bool, campaign: str) -> None:
    from tqdm import tqdm
    bar = tqdm(total=len(todo), desc=campaign, unit="run", disable=not progress, file=sys.stderr)
    if len(devices) == 1:
        if devices[0].startswith("cuda:"):
            import torch
            torch.cuda.set_device(int(devices[0].split(":")[1]))
        for cfg in todo:
            s = _run_config(cfg.to_dict())
            bar.set_postfix_str(f"{cfg.run_id()} {s['status']}")
            bar.update()
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        for d in devices:
            queue.put(d)
        threads = max(1, (os.cpu_count() or 1) // len(devices))
        with ProcessPoolExecutor(len(devices), mp_context=ctx, initializer=_init_worker,
                                 initargs=(queue, threads)) as pool:
            futures = {pool.submit(_run_config, cfg.to_dict()): cfg for cfg in todo}
            try:
                for fut in as_completed(futures):
                    s = fut.result()
                    bar.set_postfix_str(f"{futures[fut].run_id()} {s['status']}")
                    bar.update()
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    bar.close()


# -----------------------------------------------------------------------------------------------------------------
# reading a campaign back

def read_manifest(campaign: str, preset: str) -> dict | None:
    p = manifest_path(campaign, preset)
    return records.read_json(p) if p.exists() else None


def results(campaign: str, preset: str) -> pd.DataFrame:
    """One row per (arm, seed) of the manifest: the run's config values, status and summary numbers."""
    m = read_manifest(campaign, preset)
    if m is None:
        return pd.DataFrame()
    out = []
    for row in m["runs"]:
        run_dir = runs_dir() / row["run_id"]
        p = run_dir / "config.json"
        cfg = records.read_json(p) if p.exists() else get_config(
            preset, **{**m.get("base", {}), **row["overrides"], "seed": row["seed"]}).to_dict()
        s = records.read_summary(run_dir) or {"status": "missing"}
        out.append({**cfg, "arm": row["arm"], "seed": row["seed"], "run_id": row["run_id"],
                    "status": s.get("status"), "final_val_loss": s.get("final_val_loss"),
                    "best_val_loss": s.get("best_val_loss"), "tokens_per_s": s.get("tokens_per_s"),
                    "wall_time_s": s.get("wall_time_s"), "diverged_at": s.get("diverged_at"),
                    "error": s.get("error")})
    return pd.DataFrame(out)


def arm_stats(df: pd.DataFrame) -> pd.DataFrame:
    """One row per arm (manifest order): counts by status and final val loss mean/std over finished seeds."""
    rows = []
    for arm, g in df.groupby("arm", sort=False):
        fin = g[g.status == "finished"]
        vals = fin.final_val_loss.astype(float)
        rows.append({"arm": arm, "n": len(g), "finished": len(fin), "diverged": int((g.status == "diverged").sum()),
                     "failed": int(g.status.isin(["failed", "missing"]).sum()),
                     "mean": vals.mean() if len(vals) else math.nan,
                     "std": vals.std(ddof=1) if len(vals) > 1 else math.nan,
                     "best": g.best_val_loss.astype(float).min(), "tokens_per_s": fin.tokens_per_s.mean(),
                     "wall_s": fin.wall_time_s.mean()})
    return pd.DataFrame(rows)


def best_arm(df: pd.DataFrame, where: dict | None = None) -> str | None:
    """The arm (among rows matching `where`) with the lowest mean final val loss over finished seeds. Arms with a
    diverged seed rank after every arm without one; arms with no finished seed never win."""
    sel = df
    for k, v in (where or {}).items():
        sel = sel[sel[k] == v] if len(sel) else sel
    if sel.empty:
        return None
    st = arm_stats(sel)
    st = st[st.finished > 0]
    if st.empty:
        return None
    return st.assign(unstable=st.diverged > 0).sort_values(["unstable", "mean"], kind="stable").arm.iloc[0]


def best_setting(campaign: str, preset: str, key: str, where: dict | None = None):
    """The value of config field `key` in the best arm of `campaign` among runs matching `where` (None if the
    campaign was never run at `preset` or no arm finished)."""
    df = results(campaign, preset)
    arm = best_arm(df, where) if not df.empty else None
    if arm is None:
        return None
    v = df[df.arm == arm][key].iloc[0]
    return v.item() if hasattr(v, "item") else v


def _from_lr_sweep(preset: str, key: str, optimizer: str, given: float, notes: list[str]) -> float:
    """`given` if set (> 0), else the best value from lr_sweep, else the preset default; the choice goes to notes."""
    if given:
        notes.append(f"{optimizer} {key} = {given} (given as a parameter)")
        return float(given)
    df = results("lr_sweep", preset)
    pending = 0 if df.empty else int((~df.status.isin(records.FINAL + ("failed",))).sum())
    best = best_setting("lr_sweep", preset, key, {"optimizer": optimizer})
    if best is not None and not pending:
        notes.append(f"{optimizer} {key} = {best}: the best {optimizer} arm of lr_sweep at preset {preset}")
        return float(best)
    if best is not None:  # a half-finished sweep would name a "best" among the arms that happen to be done
        notes.append(f"lr_sweep at preset {preset} still has {pending} unfinished run(s): not reading a best {key}")
    default = getattr(get_config(preset), key)
    notes.append(f"{optimizer} {key} = {default}: lr_sweep has no finished {optimizer} run at preset {preset}, "
                 "so this is the preset default (run lr_sweep first for a tuned value)")
    print(f"[lab] {notes[-1]}", flush=True)
    return float(default)


def _base(steps: int, wandb: str) -> dict:
    return {"wandb": wandb, **({"steps": int(steps)} if steps else {})}


# -----------------------------------------------------------------------------------------------------------------
# the campaigns (each notebook calls one of these with its parameters)

def verify(preset: str = "cpu", seeds=(0,), steps: int = 0, lr: float = 0.0, devices=("auto",),
           wandb: str = "disabled") -> pd.DataFrame:
    """One Muon run end to end, plus the singular values of one orthogonalized real gradient."""
    notes = []
    lr = lr or get_config(preset).lr
    df = run_arms("verify", preset, {f"muon lr={lr:g}": {"optimizer": "muon", "lr": lr}}, seeds, devices,
                  _base(steps, wandb), notes=notes)
    with contextlib.chdir(ROOT):
        check = orthogonality_check(get_config(preset, **_base(steps, wandb), lr=lr, seed=int(seeds[0])))
    records.write_json(runs_dir() / "campaigns" / f"verify-{preset}.checks.json", check)
    return df


def orthogonality_check(config) -> dict:
    """Singular values of one hidden matrix's real gradient before and after each orthogonalizer (bf16, as Muon
    runs it) at initialization: orthogonalized, they should all sit near 1."""
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


def lr_sweep(preset: str = "cpu", seeds=(0, 1, 2), steps: int = 0, muon_lrs=(0.001, 0.003, 0.01, 0.023, 0.05, 0.1),
             adamw_lrs=(1e-3, 2e-3, 4e-3, 8e-3), devices=("auto",), wandb: str = "disabled") -> pd.DataFrame:
    """Muon peak lr sweep against AdamW, whose own small lr sweep makes the baseline fair (baseline = best AdamW)."""
    arms = {f"muon lr={lr:g}": {"optimizer": "muon", "lr": float(lr)} for lr in muon_lrs}
    arms |= {f"adamw lr={lr:g}": {"optimizer": "adamw", "adamw_lr": float(lr)} for lr in adamw_lrs}
    return run_arms("lr_sweep", preset, arms, seeds, devices, _base(steps, wandb))


def geodesic(preset: str = "cpu", seeds=(0, 1, 2), steps: int = 0, lr: float = 0.0,
             modes=("none", "lr", "lr_norm"), devices=("auto",), wandb: str = "disabled") -> pd.DataFrame:
    """Projection (geodesic=none) vs exact geodesic steps with theta = lr or lr * ||U||, at the best Muon lr."""
    notes = []
    lr = _from_lr_sweep(preset, "lr", "muon", lr, notes)
    arms = {("projection" if m == "none" else f"geodesic {m}"): {"optimizer": "muon", "lr": lr, "geodesic": m}
            for m in modes}
    return run_arms("geodesic", preset, arms, seeds, devices, _base(steps, wandb), notes=notes)


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


def advanced(preset: str = "cpu", seeds=(0, 1, 2), steps: int = 0, lr: float = 0.0, weight_decay: float = 0.1,
             arms=("newton_schulz", "polar_express", "normuon", "weight_decay", "cautious_wd", "polar_express+normuon",
                   "polar_express+normuon+cautious_wd"), devices=("auto",), wandb: str = "disabled") -> pd.DataFrame:
    """Polar Express, NorMuon, cautious weight decay (vs plain decay) and combinations, at the best Muon lr."""
    notes = []
    lr = _from_lr_sweep(preset, "lr", "muon", lr, notes)
    grid = {a: {"optimizer": "muon", "lr": lr, **advanced_overrides(a, weight_decay)} for a in arms}
    return run_arms("advanced", preset, grid, seeds, devices, _base(steps, wandb), notes=notes)


def lazy_projection(preset: str = "cpu", seeds=(0, 1, 2), steps: int = 0, frequencies=(1, 3, 5, 7, 10, 15, 20),
                    lr: float = 0.0, adamw_lr: float = 0.0, devices=("auto",), wandb: str = "disabled") -> pd.DataFrame:
    """Project onto the sphere every N-th step, for Muon (best lr) and AdamW (best AdamW lr)."""
    notes = []
    lr = _from_lr_sweep(preset, "lr", "muon", lr, notes)
    adamw_lr = _from_lr_sweep(preset, "adamw_lr", "adamw", adamw_lr, notes)
    arms = {f"muon every={k}": {"optimizer": "muon", "lr": lr, "project_every": int(k)} for k in frequencies}
    arms |= {f"adamw every={k}": {"optimizer": "adamw", "adamw_lr": adamw_lr, "project_every": int(k)}
             for k in frequencies}
    return run_arms("lazy_projection", preset, arms, seeds, devices, _base(steps, wandb), notes=notes)


CAMPAIGN_FUNCTIONS = {"verify": verify, "lr_sweep": lr_sweep, "geodesic": geodesic, "advanced": advanced,
                      "lazy_projection": lazy_projection}
