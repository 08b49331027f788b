"""Markdown reports rendered from run records alone (manifest + run directories): `python -m lab report NAME`.

One generic renderer; SPECS says per campaign what the question is and which arms are compared. Every number in
a report is computed from summary.json / metrics.jsonl / meta.json, so a report can be regenerated at any time.
"""
from __future__ import annotations

import math
import os
import re

import pandas as pd

from lab import campaign as C
from lab import records

_peak_lr = lambda r: r["lr"] if r["optimizer"] == "muon" else r["adamw_lr"]
SPECS = {
    "verify": dict(file="VERIFY_REPORT.md", title="Verify: one Muon run on nGPT",
                   question="Does a Muon run on nGPT complete, and does its orthogonalizer make updates orthogonal?"),
    "lr_sweep": dict(file="MUON_LR_SWEEP_REPORT.md", title="Muon learning-rate sweep on nGPT",
                     question="Which peak learning rate should Muon use on nGPT, and does tuned Muon beat AdamW "
                              "at its own best learning rate?",
                     baseline={"optimizer": "adamw"}, treatment={"optimizer": "muon"},
                     sweep=("peak lr", _peak_lr, "log")),
    "geodesic": dict(file="GEODESIC_MUON_REPORT.md", title="Geodesic Muon updates on nGPT",
                     question="Does an exact geodesic step on the sphere (theta = lr or lr * ||U||) beat Muon's "
                              "ambient step followed by projection?", baseline={"geodesic": "none"}),
    "advanced": dict(file="ADVANCED_MUON_REPORT.md", title="Advanced Muon features on nGPT",
                     question="Which modded-nanogpt Muon features (Polar Express, NorMuon, cautious weight decay) "
                              "transfer to nGPT?",
                     baseline={"orthogonalizer": "newton_schulz", "normuon": False, "weight_decay": 0.0},
                     pairs=[({"arm": "cautious_wd"}, {"arm": "weight_decay"}),
                            ({"arm": "weight_decay"}, {"arm": "newton_schulz"})],
                     caveat="On the sphere, plain decoupled decay shrinks each unit vector radially and the next "
                            "projection undoes that (it only rescales the step by 1/(1 - lr*wd)); cautious decay "
                            "masks coordinates, which changes the direction, so it is compared with plain decay at "
                            "the same weight_decay."),
    "lazy_projection": dict(file="LAZY_PROJECTION_REPORT.md", title="Lazy sphere projection with Muon and AdamW",
                            question="How often must nGPT's weights be projected back to the sphere with Muon, "
                                     "and does Muon tolerate lazier projection than AdamW?",
                            baseline={"optimizer": "muon", "project_every": 1}, treatment={"optimizer": "muon"},
                            pairs=[({"optimizer": "adamw"}, {"optimizer": "adamw", "project_every": 1}),
                                   ({"optimizer": "muon"}, {"optimizer": "adamw"})],
                            sweep=("project_every", lambda r: r["project_every"], "linear")),
}


def _vals(df, arm):
    return df[(df.arm == arm) & (df.status == "finished")].final_val_loss.astype(float).tolist()


def welch(df, a, b) -> float | None:
    from scipy.stats import ttest_ind
    xa, xb = _vals(df, a), _vals(df, b)
    return None if min(len(xa), len(xb)) < 2 else float(ttest_ind(xa, xb, equal_var=False).pvalue)


def _ms(x) -> str:
    return f"{pd.Series(x).mean():.4f} ± {pd.Series(x).std(ddof=1):.4f}" if len(x) > 1 else \
        (f"{x[0]:.4f}" if x else "n/a")


def compare(df, a, b, label_b: str | None = None, k: int = 1) -> str:
    """One sentence: does arm `a` beat arm `b` (mean ± std over finished seeds, Welch t-test)?

    When `a` was picked as the best of k candidate arms, the verdict uses the Bonferroni-adjusted p = min(1, k p):
    picking the best of several arms and testing it alone overstates the evidence."""
    xa, xb, p = _vals(df, a), _vals(df, b), welch(df, a, b)
    raw = p
    if p is not None and not math.isnan(p) and k > 1:
        p = min(1.0, k * p)
    pstr = (f"Welch p = {raw:.2g}, Bonferroni-adjusted for the best of {k} arms p = {p:.2g}" if k > 1 and
            raw is not None and not math.isnan(raw) else f"Welch p = {p:.2g}" if p is not None else "")
    a, b = f"`{a}`", label_b or f"`{b}`"
    seeds = f"{len(xa)} seed{'s' * (len(xa) != 1)}" if len(xa) == len(xb) else f"{len(xa)} and {len(xb)} seeds"
    nums = f"{_ms(xa)} vs {_ms(xb)} final val loss over {seeds}"
    if p is None:
        return f"{a} vs {b}: not enough seeds for a test ({nums})"
    if math.isnan(p):
        return f"no significant difference between {a} and {b} ({nums}, Welch p undefined: zero variance)"
    if p >= 0.05:
        return f"no significant difference between {a} and {b} ({nums}, {pstr})"
    verb = "beats" if sum(xa) / len(xa) < sum(xb) / len(xb) else "loses to"
    return f"{a} {verb} {b}: {nums}, {pstr}"


def arm_table(df, baseline: str | None) -> pd.DataFrame:
    st = C.arm_stats(df)
    t = pd.DataFrame({"arm": st.arm, "seeds": st.n, "finished": st.finished, "diverged": st.diverged,
                      "failed": st.failed,
                      "final val (mean ± std)": [_ms(_vals(df, a)) for a in st.arm], "best val": st.best,
                      "tokens/s": st.tokens_per_s.round(0), "wall s": st.wall_s.round(1)})
    if baseline is not None:
        t["Δ vs baseline"] = st["mean"] - st.set_index("arm")["mean"].get(baseline, math.nan)
        ps = {a: welch(df, a, baseline) for a in st.arm if a != baseline}
        t["p vs baseline"] = ["baseline" if a == baseline else "n/a" if ps[a] is None or math.isnan(ps[a])
                              else f"{ps[a]:.2g}" for a in st.arm]
    return t


def _plot_curves(df, path, title):
    import matplotlib.pyplot as plt
    rows = [{"arm": r.arm, **m} for r in df.itertuples() for m in records.read_metrics(C.runs_dir() / r.run_id)]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key in zip(axes, ("train_loss", "val_loss")):
        if rows and key in pd.DataFrame(rows):
            curves = pd.DataFrame(rows).dropna(subset=[key]).groupby(["arm", "step"], sort=False)[key].mean()
            for arm in df.arm.unique():
                if arm in curves.index.get_level_values(0):
                    ax.plot(curves[arm].index, curves[arm].values, marker="." if key == "val_loss" else None,
                            label=arm)
        ax.set(xlabel="step", ylabel=f"{key.replace('_', ' ')} (mean over seeds)")
    axes[1].legend(fontsize=7, ncol=2)
    fig.suptitle(title)
    fig.savefig(path, dpi=120, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


def _plot_sweep(df, path, title, xlabel, xfn, scale):
    import matplotlib.pyplot as plt
    fin = df[df.status == "finished"].assign(x=lambda d: d.apply(xfn, axis=1))
    fig, ax = plt.subplots(figsize=(6, 4))
    for opt, g in fin.groupby("optimizer"):
        s = g.groupby("x").final_val_loss.agg(["mean", "std"]).reset_index()
        ax.errorbar(s.x, s["mean"], yerr=s["std"].fillna(0), marker="o", capsize=3, label=opt)
    ax.set(xlabel=xlabel, ylabel="final val loss (mean ± std over seeds)", title=title, xscale=scale)
    ax.legend()
    fig.savefig(path, dpi=120, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


def _environment(df, preset, name) -> list[str]:
    metas = [records.read_json(p) for p in (C.runs_dir() / r / "meta.json" for r in df.run_id.unique()) if p.exists()]
    uniq = lambda key: sorted({str(m.get(key)) for m in metas})
    versions = sorted({", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items() if v) for m in metas})
    nb = C.runs_dir() / "campaigns" / f"{name}-{preset}.ipynb"
    link = os.path.relpath(nb, C.reports_dir()) if nb.exists() else None
    return [f"- preset: `{preset}`; runs: {len(df)} ({df.run_id.nunique()} distinct), records in "
            f"`{os.path.relpath(C.runs_dir(), C.ROOT) if C.runs_dir().is_relative_to(C.ROOT) else C.runs_dir()}/`",
            f"- git commit(s): {', '.join(c[:12] for c in uniq('git_commit'))}"
            f"{' (None: no commit yet)' if 'None' in uniq('git_commit') else ''}; "
            f"uncommitted changes: {', '.join(uniq('git_dirty'))}",
            *[f"- versions: {v}" for v in versions], f"- device(s): {'; '.join(uniq('device'))}",
            f"- executed notebook: [{link}]({link}) (not committed: runs/ is ignored)" if link else
            "- executed notebook: none (run headless)",
            f"- regenerate: `python -m lab campaign {name} --preset {preset}` (reuses finished runs) or "
            f"`python -m lab report {name}` (records only)"]


def _verify_answer(df, preset) -> tuple[str, list[str]]:
    fin = df[df.status == "finished"]
    p = C.runs_dir() / "campaigns" / f"verify-{preset}.checks.json"
    chk = records.read_json(p) if p.exists() else None
    sv = lambda k: f"[{chk[k]['signal_min']:.3f}, {chk[k]['signal_max']:.3f}]"
    ortho = (f"; one real gradient at init (`{chk['param']}`, {chk['shape']}) has {chk['signal_dirs']} of "
             f"{chk['dirs']} singular directions inside the orthogonalizers' design range (normalized sigma >= 1e-3), "
             f"and there its orthogonalized singular values are {sv('newton_schulz')} with Newton-Schulz and "
             f"{sv('polar_express')} with Polar Express (the remaining near-null directions stay small: the init "
             f"gradient's median normalized sigma is {chk['gradient']['median']:.1e})"
             if chk and "signal_dirs" in chk else "")
    if len(fin) == len(df) and len(df):
        ans = f"Yes: {len(fin)}/{len(df)} Muon run(s) finished, final val loss {_ms(fin.final_val_loss.tolist())}"
        ans += ortho
    else:
        ans = f"No: run status(es) {', '.join(df.status)}" + ortho
    routing = C.runs_dir() / df.run_id.iloc[0] / "routing.md"
    return ans + ".", (["## Routing (which optimizer takes each parameter)", "", routing.read_text()]
                       if routing.exists() else [])


def render_report(name: str, preset: str | None = None) -> str:
    """Render reports/<FILE>.md (+ reports/figs/<name>_*.png) for the latest grid of `name`; return the markdown.
    `preset` None = the preset of the most recently written manifest of `name`; `all` renders every campaign."""
    if name == "all":
        return "\n\n".join(render_report(n, preset) for n in C.CAMPAIGNS
                           if list((C.runs_dir() / "campaigns").glob(f"{n}-*.json")))
    if name not in SPECS:
        raise ValueError(f"unknown report {name!r}; valid: {', '.join(SPECS)}, all")
    if preset is None:
        ms = sorted((C.runs_dir() / "campaigns").glob(f"{name}-*.json"), key=lambda p: p.stat().st_mtime)
        ms = [m for m in ms if not m.name.endswith(".checks.json")]
        if not ms:
            raise FileNotFoundError(f"no records of campaign {name}: run `python -m lab campaign {name}` first")
        preset = records.read_json(ms[-1])["preset"]
    spec, df, manifest = SPECS[name], C.results(name, preset), C.read_manifest(name, preset)
    if df.empty:
        raise FileNotFoundError(f"no records of campaign {name} at preset {preset}")
    figs = C.reports_dir() / "figs"
    figs.mkdir(parents=True, exist_ok=True)
    baseline, extra = None, []
    if name == "verify":
        answer, extra = _verify_answer(df, preset)
        metric = []
    else:
        baseline = C.best_arm(df, spec["baseline"])
        treat = C.best_arm(df[df.arm != baseline], spec.get("treatment")) if baseline is not None else None
        if baseline is None or treat is None:
            answer = f"No answer yet: no finished {'baseline' if baseline is None else 'treatment'} arm."
        else:
            rest = df[df.arm != baseline]
            for key, v in (spec.get("treatment") or {}).items():
                rest = rest[rest[key] == v]
            answer = compare(df, treat, baseline, f"the baseline `{baseline}`", k=rest.arm.nunique()) + "."
            answer = answer[0].upper() + answer[1:]
        metric = ["## Success metric", "",
                  f"Final validation loss (lower is better), mean ± std over seeds; baseline `{baseline}`, "
                  f"treatment `{treat}` (the best competing arm); "
                  "Welch t-test (unequal variances). Arms with a diverged seed rank last; means are over finished "
                  "seeds.", ""]
        for a, b in spec.get("pairs", []):  # the best arm matching a vs the best other arm matching b
            bb = C.best_arm(df, b)
            ba = C.best_arm(df[df.arm != bb], a) if bb else None
            if ba and bb:
                metric.append(f"- {compare(df, ba, bb)}")
        metric += [f"- {spec['caveat']}"] if "caveat" in spec else []
    table = arm_table(df, baseline).to_markdown(index=False, floatfmt=".4g")
    _plot_curves(df, figs / f"{name}_curves.png", spec["title"])
    plots = [f"![train and validation loss per arm](figs/{name}_curves.png)"]
    if "sweep" in spec:
        _plot_sweep(df, figs / f"{name}_sweep.png", spec["title"], *spec["sweep"])
        plots.append(f"![final val loss vs {spec['sweep'][0]}](figs/{name}_sweep.png)")
    bad = df[df.status != "finished"]
    lines = [f"# {spec['title']}", "", f"**Question.** {spec['question']}", "", f"**Answer.** {answer}", "",
             *metric, "", "## Results", "", table, "", *plots, "", *extra]
    if manifest.get("notes"):
        lines += ["## Settings taken from earlier campaigns", "", *[f"- {n}" for n in manifest["notes"]], ""]
    if len(bad):
        lines += ["## Diverged and failed runs", ""]
        lines += [f"- {r.arm} seed {r.seed} (`{r.run_id}`): {r.status}"
                  + (f" at step {int(r.diverged_at)}" if r.status == "diverged" and pd.notna(r.diverged_at) else "")
                  + (f": {str(r.error).splitlines()[0]}" if isinstance(r.error, str) and r.error else "")
                  for r in bad.itertuples()] + [""]
    lines += ["## Environment", "", *_environment(df, preset, name), ""]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines))
    records.atomic_write(C.reports_dir() / spec["file"], text)
    return text


def show(name: str, preset: str | None = None) -> str:
    """In a notebook: render the report, display it (text and table) and its figures inline; return the path."""
    from IPython.display import Image, Markdown, display
    text = render_report(name, preset)
    display(Markdown(re.sub(r"!\[[^\]]*\]\([^)]*\)\n?", "", text)))
    for png in re.findall(r"!\[[^\]]*\]\(([^)]*)\)", text):
        display(Image(filename=str(C.reports_dir() / png)))
    return str(C.reports_dir() / SPECS[name]["file"])
