"""The registry: the one list of campaigns. A campaign is one module of this package, lab/campaigns/<name>.py,
found here by itself (adding a campaign touches no other file). Top to bottom it holds:

    NAME, ORDER        its name, and its place in `campaign all` and in reports/INDEX.md (ascending)
    TITLE, QUESTION    the report's title and the question it answers (README table, INDEX question column)
    HYPOTHESES         [(comparison key, statement)]: the research plan's hypotheses it tests (INDEX verdicts)
    REPORT             the report's file name, e.g. "MUON_LR_SWEEP_REPORT.md"
    PARAMS             {name: lab.params.Param(type, default, help, ...)}: declared once; the notebook's parameters
                       cell, the -p checks and `campaign NAME --help` come from here
    stages(g, p)       its runs: g is a lab.grid.Grid (g.run, g.pick, g.choose, g.run_grids), p the checked values
    analyse(r)         its report: r is a lab.report.Report (r.compare, r.answer, r.sections, r.grid_table, ...)
optional:
    ADHOC = True       an ad-hoc campaign (compare): never in `all` or the INDEX, always a variant
    check(values)      extra rules on the checked values (raise ValueError naming the bad value)
    arm_tags(overrides) the tags of an arm from its overrides (used for arms given without tags, and for manifest
                       rows written before arms carried tags)

Campaign modules import only light modules at the top (lab.params, lab.arms, lab.config): the parameter checks run
before torch or pandas is imported.
"""
from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

_EXTRA: dict[str, ModuleType] = {}  # campaigns registered from elsewhere (tests, an out-of-tree module)
_FOUND: dict[str, ModuleType] | None = None


def _found() -> dict[str, ModuleType]:
    global _FOUND
    if _FOUND is None:
        mods = [importlib.import_module(f"{__name__}.{m.name}") for m in pkgutil.iter_modules(__path__)
                if not m.name.startswith("_")]
        _FOUND = {m.NAME: m for m in mods}
    return _FOUND


def register(module: ModuleType) -> ModuleType:
    """Add a campaign module defined outside lab/campaigns/ (e.g. a test's temporary module)."""
    _EXTRA[module.NAME] = module
    return module


def unregister(name: str) -> None:
    _EXTRA.pop(name, None)


def registry() -> dict[str, ModuleType]:
    """Every campaign, in ORDER."""
    mods = {**_found(), **_EXTRA}
    return dict(sorted(mods.items(), key=lambda kv: (getattr(kv[1], "ORDER", 1000), kv[0])))


def names(lab_notebook: bool = False) -> list[str]:
    """Campaign names in order; `lab_notebook`: only those `campaign all` runs and the INDEX lists (not ad hoc)."""
    return [n for n, m in registry().items() if not (lab_notebook and getattr(m, "ADHOC", False))]


def get(name: str) -> ModuleType:
    """The campaign module called `name`; ValueError naming the valid ones (and a near miss)."""
    mods = registry()
    if name not in mods:
        from lab.params import did_you_mean
        raise ValueError(f"unknown campaign {name!r}{did_you_mean(name, mods)}; valid: {', '.join(mods)}, all")
    return mods[name]
