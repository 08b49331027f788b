"""Markdown reports rendered from run records alone (manifest + run directories): `python -m lab report NAME|all`.

Every comparison is paired by seed (a seed fixes the init and the batch order): Δ = treatment - baseline per seed,
mean Δ with its 95% t-interval, the paired t-test p, Holm-adjusted over every comparison the report makes, and the
minimum detectable effect at the seeds run (lab.stats). Settings are picked on selection seeds and judged on fresh
confirmation seeds. A campaign module's `analyse(r)` registers its comparisons, answer, sections and figures on the
Report `r`; `render_report` adds the shared sections (lab.tables) and writes the file. Names no campaign.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from lab import campaigns, params, plots, records, tables
from lab.arms import grid_edge
from lab.config import get_config
from lab.results import (
    arm_of,
    choice,
    finals,
    manifest_path,
    ranked,
    read_manifest,
    reports_dir,
    results,
    runs_dir,
    variants,
)
from lab.results import select as select_tags
from lab.stats import DELTA, Paired, holm, paired, verdict


@dataclass
class Comparison:
    label: str      # what is compared, e.g. "`muon lr=0.05` vs `adamw lr=0.008`"
    seeds: str      # "selection" | "confirmation"
    c: Paired
    key: str = ""   # for the hypotheses table
    p_adj: float = math.nan

    def verdict(self) -> str:
        return verdict(self.c, self.p_adj)

    def text(self) -> str:
        """'Δ = -0.0850 ± 0.0123 nats (95% CI; paired p = 0.003, Holm p = 0.012; 3 confirmation seeds; MDE 0.020)'"""
        c = self.c
        if c.n == 0:
            return "not measured yet (no finished seed pair)"
        if c.n == 1:
            return f"Δ = {c.delta:+.4f} nats on 1 {self.seeds} seed (no test with one seed)"
        p = "paired p undefined (identical differences)" if math.isnan(c.p) else \
            f"paired p = {c.p:.2g}, Holm-adjusted p = {self.p_adj:.2g}"
        return (f"Δ = {c.fmt()} nats (95% CI; {p}; {c.n} {self.seeds} seeds; MDE {c.mde:.3f})")


@dataclass
class Report:
    """One campaign's records and what its analysis found; the toolbox a campaign's `analyse(r)` works with."""
    module: object
    preset: str
    tag: str
    m: dict
    df: pd.DataFrame
    comparisons: list[Comparison] = field(default_factory=list)
    answer: list = field(default_factory=list)   # callables returning sentences (run after Holm)
    sections: list = field(default_factory=list)  # callables returning markdown lines
    figures: list[tuple[str, str]] = field(default_factory=list)  # (file name, caption)
    judgements: dict = field(default_factory=dict)  # {family key: lab.stats.Judgement} of this campaign's entries
    ms, p = staticmethod(tables.ms), staticmethod(tables.p_text)  # 'mean ± std' of a row; a p-value

    @property
    def name(self) -> str:
        return self.module.NAME

    @property
    def params(self) -> dict:
        return self.m.get("params", {})

    @property
    def manifest(self) -> Path:
        return manifest_path(self.name, self.preset, self.tag)

    def run_dir(self, run_id: str) -> Path:
        return runs_dir(self.preset) / run_id

    # --- the records ---
    def stage(self, stage: str) -> pd.DataFrame:
        return self.df[self.df.stage == stage] if len(self.df) else self.df

    def select(self, df: pd.DataFrame, **tags) -> pd.DataFrame:
        return select_tags(df, **tags)

    def arm_of(self, df: pd.DataFrame, **tags) -> str | None:
        """The label of the one arm of `df` with these tags (None if none)."""
        return arm_of(df, **tags)

    def tags_of(self, arm: str) -> dict:
        return self.df[self.df.arm == arm].tags.iloc[0]

    def finals(self, arm: str | None, stage: str | None = None) -> dict[int, float]:
        return finals(self.df, arm, stage) if arm else {}

    def choice(self, key: str):
        c = choice(self.m, key)
        return None if c is None else c["value"]

    def grid_of(self, key: str) -> list:
        """The grid a choice was made from (as the campaign recorded it, extensions past an edge included)."""
        c = choice(self.m, key)
        return list(c.get("grid", [])) if c else []

    @property
    def steps(self) -> int:
        return int(self.df.steps.iloc[0]) if len(self.df) else get_config(self.preset).steps

    def budgets(self) -> list[int]:
        """The steps per run: one value, or several when the campaign spans budgets (horizon)."""
        return sorted({int(x) for x in self.df.steps}) if len(self.df) else [self.steps]

    def budget(self) -> str:
        """'0.8M', or '0.2M–1.6M' for a campaign that spans budgets."""
        b = self.budgets()
        return self.tokens(b[0]) if len(b) == 1 else f"{self.tokens(b[0])}–{self.tokens(b[-1])}"

    def tokens(self, steps: int | None = None) -> str:
        return plots.fmt_tokens((steps or self.steps) * get_config(self.preset).tokens_per_step)

    # --- comparisons and sentences ---
    def compare(self, treat: str, base: str, stage: str, label: str | None = None, key: str = "") -> Comparison:
        c = paired(finals(self.df, treat, stage), finals(self.df, base, stage))
        return self.add(label or f"`{treat}` vs `{base}`", stage, c, key)

    def add(self, label: str, stage: str, c: Paired, key: str = "") -> Comparison:
        cmp = Comparison(label, tables.ROLE.get(stage, stage), c, key)
        self.comparisons.append(cmp)
        return cmp

    def get(self, key: str) -> Comparison | None:
        return next((c for c in self.comparisons if c.key == key), None)

    def best_vs_runner_up(self, df: pd.DataFrame, stage: str, what: str, key: str):
        """Compare the best arm of `df` with the runner-up (selection seeds: optimistic for the winner)."""
        order = ranked(df)
        if len(order) < 2:
            return None, None
        return order[0], self.compare(order[0], order[1], stage, f"best {what} `{order[0]}` vs runner-up "
                                                                 f"`{order[1]}`", key)

    @staticmethod
    def say(cmp: Comparison | None, win: str, lose: str, tie: str) -> str:
        """Pick the sentence for the comparison's verdict and append its numbers."""
        if cmp is None or cmp.c.n == 0:
            return "not measured yet"
        v = cmp.verdict()
        head = win if v == "wins" else lose if v == "loses" else tie if v == "no significant difference" else \
            f"{tie} (not enough seeds for a test)"
        return f"{head}: {cmp.text()}"

    @staticmethod
    def edge(value, grid: list, what: str) -> str:
        """A warning when the chosen value sits on the edge of its grid (the optimum may lie outside)."""
        side = grid_edge(grid, value)
        return (f" **Grid-edge warning:** the best {what} ({value:g}) is the {side} value of its grid "
                f"{[float(f'{g:g}') for g in grid]}: the optimum may lie beyond it; extend the grid." if side else "")

    # --- the confirmatory family (lab.family): the only comparisons with verdict words ---
    def confirmatory(self) -> dict:
        """Judge this campaign's entries of the lab-wide family (Holm over the whole family: the other campaigns'
        entries come from their default-parameter records) and add their table, a forest plot and the method
        line. Returns {key: Judgement}."""
        from lab import family
        mine = family.of_campaign(self.name)
        if not mine:
            return {}
        read = lambda name: self.df if name == self.name else results(name, self.preset)
        judged = family.judge_all(self.preset, read)
        self.judgements = {c.key: judged[c.key] for c in mine}
        self.sections.append(lambda: tables.confirmatory_lines(self, mine, len(family.FAMILY)))
        fn = self.figname("forest")
        rows = [(c.key, j.delta, j.lo_v, j.hi_v, j.level, j.verdict, j.n) for c in mine
                if (j := self.judgements[c.key]).n >= 2]
        if rows:
            plots.forest_figure(rows, DELTA, f"{self.module.TITLE}: confirmatory Δ ({self.budget()} tokens)",
                                self.figdir() / fn)
            seeds = tables.seeds_text(family.CONFIRM_SEEDS)
            self.figures.append((fn, f"confirmatory comparisons on confirmation seeds {seeds}: "
                                     "Δ = treatment − control with the interval at the level its verdict uses; "
                                     f"shaded: ±δ = ±{DELTA:g} nats, the smallest effect of interest"))
        return self.judgements

    def verdict_text(self, key: str) -> str:
        """'better: Δ = -0.0892 [-0.1230, -0.0554] (95%), Holm p 0.012, 6 seeds' for a family entry."""
        j = self.judgements.get(key)
        if j is None or j.n == 0:
            return "not measured yet on the confirmation seeds"
        return tables.judgement_text(j)

    # --- tables and figures ---
    def grid_table(self, df: pd.DataFrame, stage: str, title: str) -> None:
        if not df.empty:
            self.sections.append(lambda: tables.grid_table(df, stage, title))

    def figdir(self) -> Path:
        d = reports_dir(self.preset, self.tag) / "figs"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def figname(self, what: str) -> str:
        return f"{self.name}{'-' + self.tag if self.tag else ''}_{what}.png"

    def _with_tag(self, df: pd.DataFrame, tag: str | None) -> pd.DataFrame:
        return df.assign(**{tag: [t.get(tag) for t in df.tags]}) if tag else df

    def curves(self, df: pd.DataFrame, baseline: str | None, swept: str | None, what: str = "curves") -> None:
        """Validation curves per arm (colour along the tag `swept`) and the paired Δ against `baseline`."""
        from lab.results import val_curves
        curves = val_curves(df, self.preset)
        if curves.empty:
            return
        fn = self.figname(what)
        plots.curves_figure(curves, self._with_tag(df.drop_duplicates("arm"), swept), baseline, swept,
                            f"{self.module.TITLE} ({self.preset})", self.figdir() / fn)
        self.figures.append((fn, "validation loss per arm (mean over seeds, band: min–max; y-range: the last "
                                 "two-thirds of training)" + (f", and the paired Δ against `{baseline}`" if baseline
                                                              else "")))

    def sweep(self, df: pd.DataFrame, x: str, xlabel: str, log: bool, title: str, caption: str) -> None:
        """Final val loss vs the tag `x` per optimizer (finished runs of `df`)."""
        fn = self.figname("sweep")
        plots.sweep_figure(self._with_tag(df[df.status == "finished"], x), x, xlabel, log, title, self.figdir() / fn)
        self.figures.append((fn, caption))


def report_file(module, preset: str, tag: str = "") -> Path:
    """reports/<REPORT> for the cpu preset at default parameters, else reports/<preset>/<STEM>[-<tag>].md."""
    stem = Path(module.REPORT).stem
    return reports_dir(preset, tag) / (f"{stem}-{tag}.md" if tag else module.REPORT)


def _unknown_variant(name: str, preset: str, tag: str) -> str:
    have = [v for v in variants(preset) if v["campaign"] == name]
    listed = "; ".join(f"{v['tag'] or '(default)'}" for v in have) or "none"
    return (f"no records of campaign {name} at preset {preset}" + (f", variant {tag!r}" if tag else "")
            + f": existing variants: {listed} (`python -m lab report --list`); run `python -m lab campaign {name} "
            f"--preset {preset}` first (looked for {manifest_path(name, preset, tag)})")


def analyse(name: str, preset: str = "cpu", tag: str = "") -> Report:
    """Read a campaign's records and run its analysis (comparisons Holm-adjusted, figures written)."""
    module = campaigns.get(name)
    m = read_manifest(name, preset, tag)  # CorruptRecord names the file
    if m is None:
        raise FileNotFoundError(_unknown_variant(name, preset, tag))
    r = Report(module, preset, tag, m, results(name, preset, tag, m=m, arm_tags=getattr(module, "arm_tags", None)))
    if r.df.empty:
        raise FileNotFoundError(f"campaign {name} at preset {preset} has a manifest but no runs yet")
    module.analyse(r)
    for c, p in zip(r.comparisons, holm([c.c.p for c in r.comparisons])):
        c.p_adj = p
    return r


def _given(r: Report) -> dict:
    """The parameters that make this report a variant: those that differ from the defaults (every one for an
    ad-hoc campaign, whose defaults are only an example)."""
    if getattr(r.module, "ADHOC", False):
        return dict(r.params)
    return {k: v for k, v in r.params.items() if v != params.defaults(r.module).get(k)}


def _header(r: Report) -> list[str]:
    """The variant's name and its parameters (nothing for the lab notebook's report, at the defaults)."""
    given = _given(r)
    if not r.tag and not given:
        return []
    what = ", ".join(f"`{k}={v}`" for k, v in given.items()) or "none"
    which = "Parameters" if getattr(r.module, "ADHOC", False) else "Parameters that differ from the defaults"
    return [f"**{f'Variant `{r.tag}`. ' if r.tag else ''}{which}:** {what}.", ""]


def render_report(name: str, preset: str = "cpu", tag: str = "") -> str:
    """Render the report of a campaign from its records into report_file(...); return the markdown."""
    r = analyse(name, preset, tag)
    answer = " ".join(f() for f in r.answer)
    lines = [f"# {r.module.TITLE}", "", *_header(r), f"**Question.** {r.module.QUESTION}", "",
             f"**Answer (at {r.budget()} tokens).** {answer}", "", *tables.measured_lines(r),
             *tables.comparisons_lines(r)]
    for section in r.sections:
        lines += section()
    if r.figures:
        lines += ["## Figures", ""] + [f"![{cap}](figs/{fn})\n\n*{cap}.*\n" for fn, cap in r.figures]
    regen = params.regenerate(name, preset, _given(r), tag if r.m.get("named") else "")
    lines += [*tables.throughput_lines(r), *tables.bad_lines(r), *tables.environment_lines(r, regen)]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).rstrip() + "\n"
    records.atomic_write(report_file(r.module, preset, tag), text)
    return text


def render_all(preset: str = "cpu") -> tuple[list[Path], list[str]]:
    """Every lab-notebook campaign with records at `preset`, then the index: (files written, what could not be
    rendered and why). One broken record never stops the others."""
    from lab.index import render_index
    names = [n for n in campaigns.names(lab_notebook=True) if manifest_path(n, preset).exists()]
    if not names:
        raise FileNotFoundError(f"no campaign records at preset {preset} under {tables.rel(runs_dir(preset))}: run "
                                f"`python -m lab campaign all --preset {preset}` first")
    written, failed = [], []
    for n in names:
        try:
            render_report(n, preset)
            written.append(report_file(campaigns.get(n), preset))
        except Exception as e:  # noqa: BLE001 - named below, and the rest still renders
            failed.append(f"{n}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    path, index_failed = render_index(preset)
    return [*written, path], failed + [f for f in index_failed if f not in failed]


def show(name: str, values: dict) -> str:
    """In a notebook: render the report, display it (text and tables) and its figures inline; return the path."""
    from IPython.display import Image, Markdown, display
    module = campaigns.get(name)
    tag, preset = params.variant_tag(module, values), values["preset"]
    text = render_report(name, preset, tag)
    display(Markdown(re.sub(r"!\[[^\]]*\]\([^)]*\)\n?", "", text)))
    for png in re.findall(r"!\[[^\]]*\]\(([^)]*)\)", text):
        display(Image(filename=str(reports_dir(preset, tag) / png)))
    return str(report_file(module, preset, tag))
