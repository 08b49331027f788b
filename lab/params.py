"""A campaign's parameters, declared once (lab/campaigns/<name>.py: PARAMS) and checked before any work.

    Param(type, default, help, field=..., ...)   one parameter: its type, default and one-line help
    spec(module)                                 every parameter of a campaign: COMMON_HEAD + module.PARAMS + COMMON
    check(module, params)                        coerce (CLI and plain papermill pass strings) and check
    variant_tag(module, values)                  '' at the defaults, else a readable `tag` or a short hash
    nondefault(module, values) / regenerate(...) what differs from the defaults, and the command that reruns it

The notebook's parameters cell, the `-p` checks, `campaign NAME --help`, the README campaign table and the INDEX all
come from these declarations. Nothing here imports torch or pandas: a bad value is refused in well under a second.
"""
from __future__ import annotations

import ast
import difflib
import hashlib
import json
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

from lab.config import WANDB_MODES, get_config


@dataclass(frozen=True)
class Param:
    """One campaign parameter. `field`: the Config field whose rules check each value (an lr, a seed, steps);
    `zero_default`: 0 means "the preset default or the upstream choice"; `result_free`: changes no number (not part
    of a variant); `empty_ok`: an empty list is allowed; `check(value, values)`: extra rule, raises ValueError(why)."""
    type: object
    default: object
    help: str
    field: str | None = None
    zero_default: bool = False
    result_free: bool = False
    empty_ok: bool = False
    check: Callable | None = None


def _devices(value, values) -> None:
    for d in value:
        if not (d in ("auto", "cpu", "cuda") or (d.startswith("cuda:") and d[5:].isdigit())):
            raise ValueError(f"has device {d!r}; valid: auto, cpu, cuda, cuda:N")
    if len({d.split(":")[0] for d in value}) > 1:
        raise ValueError("mixes device kinds; use one of cpu, cuda:N or auto")


def _choice(*valid: str) -> Callable:
    def check(value, values) -> None:
        if value not in valid:
            raise ValueError(f"is not one of {', '.join(valid)}")
    return check


def _tag(value, values) -> None:
    if value and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,40}", value):
        raise ValueError("is not a usable name (letters, digits, _ . -; up to 41 characters)")


COMMON_HEAD = {"preset": Param(str, "cpu", "smoke | cpu | h100: model, data and steps (lab.config.PRESETS)",
                               result_free=True)}
# execution settings every campaign takes: they change where and how runs train, never a number
COMMON = {
    "devices": Param(list[str], ["auto"], 'one worker per entry: ["cpu", "cpu"], ["cuda:0", "cuda:1"]; auto: cuda '
                     "if any", result_free=True, check=_devices),
    "wandb": Param(str, "disabled", "disabled | offline | online (group: campaign, name: run id)", result_free=True,
                   check=_choice(*WANDB_MODES)),
    "executor": Param(str, "local", "local (worker processes here) | submitit (one Slurm job per run)",
                      result_free=True, check=_choice("local", "submitit")),
    "slurm_partition": Param(str, "", "submitit: the Slurm partition; empty: the cluster default", result_free=True),
    "gpus_per_job": Param(int, 1, "submitit: GPUs per Slurm job (a run of N processes has its own id: a variant)"),
    "timeout_min": Param(int, 60, "submitit: wall-clock limit of one job, minutes", result_free=True),
    "tag": Param(str, "", "a readable name for this variant (default: a hash of the non-default parameters)",
                 result_free=True, check=_tag),
    "verbose": Param(bool, False, "print more (verify: the routing table of its run)", result_free=True),
}


def spec(module: ModuleType) -> dict[str, Param]:
    """Every parameter of a campaign, in notebook order."""
    return {**COMMON_HEAD, **module.PARAMS, **COMMON}


def type_name(t) -> str:
    return getattr(t, "__name__", None) if not getattr(t, "__args__", None) else str(t)


def defaults(module: ModuleType) -> dict:
    return {k: p.default for k, p in spec(module).items()}


def coerce(value, typ):
    """`value` as `typ` (int, float, str, bool, dict, list[X]); strings (CLI, plain papermill -p) are parsed.
    TypeError when it is not one."""
    origin, args = getattr(typ, "__origin__", typ), getattr(typ, "__args__", ())
    if origin in (list, dict):
        if isinstance(value, str):
            s = value.strip()
            try:
                value = json.loads(s) if origin is dict else ast.literal_eval(s if s[:1] in "[(" else f"[{s}]")
            except (ValueError, SyntaxError):
                raise TypeError from None
        if origin is list and isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, origin):
            raise TypeError
        return [coerce(v, args[0]) for v in value] if origin is list and args else value
    if isinstance(value, str) and typ in (int, float, bool):
        s = value.strip().lower()
        try:
            if typ is bool:
                if s not in ("true", "false", "1", "0", "yes", "no"):
                    raise TypeError
                return s in ("true", "1", "yes")
            if typ is int and not float(s).is_integer():
                raise TypeError
            return int(float(s)) if typ is int else float(s)  # "300" and "3e2" are ints, "1.5" is not
        except ValueError:
            raise TypeError from None
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise TypeError
    return value


def did_you_mean(word: str, valid) -> str:
    close = difflib.get_close_matches(word, list(valid), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_value(name: str, key: str, p: Param, value, values: dict) -> None:
    bad = lambda why: ValueError(f"campaign {name}: parameter {key}={value!r} {why}")
    if isinstance(value, list):
        if not value and not p.empty_ok:
            raise bad("is empty; give at least one value")
        if key != "devices" and len(set(map(str, value))) != len(value):
            raise bad("has duplicates")
    if p.field:
        for v in value if isinstance(value, list) else [value]:
            if p.zero_default and v == 0:
                continue
            try:
                get_config(values["preset"], **{p.field: v})
            except ValueError as e:
                raise bad(f"is refused: {e}") from None
    if p.check is not None:
        try:
            p.check(value, values)
        except ValueError as e:
            raise bad(str(e)) from None


def check(module: ModuleType, params: dict) -> dict:
    """`params` (strings as typed on the command line or passed by plain `papermill -p`, or Python values) coerced
    to the declared types and checked with the rules of the config fields they set (lists non-empty, every lr > 0
    and finite, known devices, confirmation seeds disjoint from selection seeds) and the campaign's own rules
    (`module.check(values)`). Missing parameters take their defaults. ValueError names the bad value and what is
    allowed (with "did you mean" for a near-miss name)."""
    name, sp = module.NAME, spec(module)
    unknown = sorted(set(params) - set(sp))
    if unknown:
        hint = "".join(did_you_mean(u, sp) for u in unknown)
        raise ValueError(f"campaign {name}: unknown parameter(s) {unknown}{hint}; valid parameters: "
                         + ", ".join(f"{k}: {type_name(p.type)}" for k, p in sp.items()))
    out = defaults(module)
    for k, v in params.items():
        try:
            out[k] = coerce(v, sp[k].type)
        except TypeError:
            raise ValueError(f"campaign {name}: parameter {k}={v!r} is not a {type_name(sp[k].type)} "
                             f"({sp[k].help})") from None
    get_config(out["preset"])  # an unknown preset is refused here
    for k, p in sp.items():
        _check_value(name, k, p, out[k], out)
    overlap = set(out.get("seeds", [])) & set(out.get("confirm_seeds", []))
    if overlap:
        raise ValueError(f"campaign {name}: confirm_seeds share {sorted(overlap)} with seeds; confirmation seeds "
                         "must be fresh (disjoint from the selection seeds that picked the winner)")
    if hasattr(module, "check"):
        module.check(out)
    return out


def result_params(module: ModuleType, values: dict) -> dict:
    """The parameters that can change a number (what a manifest records and a variant is made of)."""
    sp = spec(module)
    return {k: v for k, v in values.items() if k in sp and not sp[k].result_free}


def nondefault(module: ModuleType, values: dict) -> dict:
    """The result-changing parameters that differ from the module's defaults."""
    d = defaults(module)
    return {k: v for k, v in result_params(module, values).items() if v != d.get(k)}


def variant_tag(module: ModuleType, values: dict) -> str:
    """'' for a lab-notebook campaign at its default parameters; else the `tag` parameter if given, else a short
    hash of the parameters that make it a variant (all of them for an ad-hoc campaign such as compare)."""
    if values.get("tag"):
        return values["tag"]
    diff = result_params(module, values) if getattr(module, "ADHOC", False) else nondefault(module, values)
    return hashlib.sha1(json.dumps(diff, sort_keys=True).encode()).hexdigest()[:6] if diff else ""


def regenerate(name: str, preset: str, params: dict, tag: str = "") -> str:
    """A command that can be pasted: `python -m lab campaign NAME --preset P -p KEY VALUE ...` (`tag`: a name the
    variant was given, which a rerun must give again)."""
    fmt = lambda v: v if isinstance(v, str) else json.dumps(v)
    words = ["python", "-m", "lab", "campaign", name, "--preset", preset]
    for k, v in params.items():
        words += ["-p", k, fmt(v)]
    if tag:
        words += ["-p", "tag", tag]
    return shlex.join(words)


def notebook_cell(module: ModuleType) -> str:
    """The notebook's `parameters` cell: one typed, commented line per parameter (one `=` each: papermill's parser
    skips a line with two)."""
    lines = [f"{k}: {type_name(p.type)} = {p.default!r}  # {p.help}" for k, p in spec(module).items()]
    bad = [line for line in lines if line.count("=") != 1]
    if bad:
        raise ValueError(f"campaign {module.NAME}: a parameter's default or help has an '=' (papermill cannot parse "
                         f"it): {bad[0]}")
    return "\n".join(lines)
