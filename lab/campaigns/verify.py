"""Does a Muon run complete? Trains one hybrid Muon run per seed, measures the singular values of one orthogonalized
real gradient (they should sit near 1) and keeps the routing table (which optimizer takes each parameter)."""
import contextlib
import math

from lab.arms import peak_lr, steps
from lab.config import get_config
from lab.params import Param

NAME, ORDER = "verify", 10
TITLE = "Verify: one Muon run on nGPT"
QUESTION = ("Does a hybrid Muon run on nGPT complete, does its orthogonalizer make the update orthogonal, and does "
            "every parameter go to the right optimizer?")
HYPOTHESES = []
REPORT = "VERIFY_REPORT.md"

PARAMS = {
    "seeds": Param(list[int], [0], "one Muon run per seed", field="seed"),
    "lr": Param(float, 0.0, "peak Muon lr; 0 means the preset default", field="lr", zero_default=True),
    "steps": Param(int, 0, "training steps per run; 0 means the preset default", field="steps", zero_default=True),
}


def arm_tags(o: dict) -> dict:
    return {"optimizer": o["optimizer"], "lr": peak_lr(o)}


def stages(g, p) -> None:
    from lab import records
    lr = p["lr"] or get_config(p["preset"]).lr
    df = g.run("run", {f"muon lr={lr:g}": {"optimizer": "muon", "lr": lr, **steps(p["steps"])}}, p["seeds"])
    cfg = get_config(p["preset"], **steps(p["steps"]), lr=lr, seed=int(p["seeds"][0]))
    path = g.path.with_suffix(".checks.json")
    old = None
    with contextlib.suppress(FileNotFoundError, records.CorruptRecord):
        old = records.read_json(path)
    if not old or old.get("run_id") != cfg.run_id():  # measured once per config, like a run: reruns reuse it
        records.write_json(path, {"run_id": cfg.run_id(), **orthogonality_check(cfg)})
    if p["verbose"]:
        from lab.results import runs_dir
        for rid in df.run_id.unique():
            print((runs_dir(p["preset"]) / rid / "routing.md").read_text())


def orthogonality_check(config) -> dict:
    """Singular values of one hidden matrix's real gradient before and after each orthogonalizer (bf16, as Muon
    runs it on a GPU) at initialization: orthogonalized, those in the design range should sit near 1."""
    import torch

    from lab.data import load_data
    from lab.models import build_model
    from lab.optim.orthogonalize import newton_schulz, polar_express
    from lab.optim.setup import routing_table
    from lab.results import ROOT
    from lab.train import resolve_device
    device = resolve_device(config)
    torch.manual_seed(config.seed)
    model = build_model(config).to(device)
    with contextlib.chdir(ROOT):  # data_dir is relative to the repo root
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


def analyse(r) -> None:
    from lab import records
    fin = r.df[r.df.status == "finished"]
    chk = None
    with contextlib.suppress(FileNotFoundError, records.CorruptRecord):
        chk = records.read_json(r.manifest.with_suffix(".checks.json"))
    sv = lambda k: f"[{chk[k]['signal_min']:.3f}, {chk[k]['signal_max']:.3f}]"
    ortho = (f" One real gradient at init (`{chk['param']}`, {chk['shape']}) has {chk['signal_dirs']} of "
             f"{chk['dirs']} singular directions inside the orthogonalizers' design range (normalized σ ≥ 1e-3); "
             f"there its orthogonalized singular values are {sv('newton_schulz')} with Newton–Schulz and "
             f"{sv('polar_express')} with Polar Express (bf16, as on a GPU), i.e. orthogonal up to each method's "
             f"designed band; the near-null directions stay small (median normalized σ of the gradient "
             f"{chk['gradient']['median']:.1e})." if chk else "")
    drift = fin.max_sphere_drift.astype(float).max() if len(fin) else math.nan
    if len(fin) == len(r.df) and len(r.df):
        ans = (f"Yes: {len(fin)}/{len(r.df)} run(s) finished at {r.tokens()} tokens ({r.steps} steps), final val "
               f"loss {', '.join(f'{v:.4f}' for v in fin.final_val_loss)}; the largest row-norm drift before a "
               f"projection was {drift:.1e}.")
    else:
        ans = f"Not yet: run status(es) {', '.join(r.df.status)}."
    r.answer.append(lambda: ans + ortho)
    routing = r.run_dir(r.df.run_id.iloc[0]) / "routing.md" if len(r.df) else None
    if routing is not None and routing.exists():
        r.sections.append(lambda: ["## Routing (which optimizer takes each parameter)", "", routing.read_text()])
    r.curves(r.df, baseline=None, swept=None)
