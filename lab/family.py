"""The lab-wide confirmatory family: every comparison that gets a verdict, declared here before its runs.

Holm runs over this family only (lab.stats.Family; a comparison without data yet counts as p = 1), on confirmation
seeds only; everything else a report shows (selection grids, runner-ups) is exploratory: intervals, no verdict words.
Each entry names the campaign whose `confirm` stage holds its arms and the arm tags that select them (a campaign's
confirm arms must carry these tags), the hypothesis it tests and what the research plan expected.
"""
from __future__ import annotations

from dataclasses import dataclass, field

CONFIRM_SEEDS = [100, 101, 102, 103, 104, 105]  # fresh seeds: never used to pick anything
BUDGETS = (100, 200, 400, 800)                   # horizon's training budgets (steps; 2048 tokens per step at cpu)
WEIGHT_DECAYS = (0.1, 1.0)                       # advanced: plain vs cautious decay at each strength
LAZY_EVERY = (3, 7)                              # lazy_projection: project every N steps (7: the plan's)
PLAN = "seeds/002_5250d43742637e46.txt"          # the research plan the expectations quote


@dataclass(frozen=True)
class Confirm:
    """treatment - control on the confirmation seeds (negative: the treatment reaches a lower loss). With `minus`
    (treatment2, control2): the interaction (treatment - control) - (treatment2 - control2), per seed."""
    key: str
    campaign: str
    hypothesis: str
    treatment: dict
    control: dict
    expectation: str = ""
    minus: tuple[dict, dict] | None = field(default=None)


def _horizon(b: int) -> Confirm:
    return Confirm(f"muon_vs_adamw@{b}", "horizon",
                   f"tuned hybrid Muon reaches a lower val loss than tuned AdamW at {b} steps ({b * 2048 / 1e6:.1f}M "
                   "tokens)", {"optimizer": "muon", "budget": b}, {"optimizer": "adamw", "budget": b},
                   "Muon beats the Adam baseline (the plan's premise)")


_PE_NM = "\"NorMuon + Polar Express achieve best results\""
FAMILY: list[Confirm] = [
    *[_horizon(b) for b in BUDGETS],
    Confirm("polar_express", "advanced", "Polar Express beats Newton–Schulz as Muon's orthogonalizer",
            {"feature": "polar_express"}, {"feature": "newton_schulz"}, _PE_NM),
    Confirm("normuon", "advanced", "NorMuon (at its own tuned lr) beats Muon", {"feature": "normuon"},
            {"feature": "newton_schulz"}, _PE_NM),
    *[Confirm(f"cautious_wd@{wd:g}", "advanced", f"cautious weight decay beats plain decay at strength {wd:g}",
              {"feature": "cautious_wd", "wd": wd}, {"feature": "weight_decay", "wd": wd},
              "cautious weight decay helps (phase 4)") for wd in WEIGHT_DECAYS],
    Confirm("cautious_wd_vs_none", "advanced", "cautious weight decay (its better strength) beats no decay",
            {"feature": "cautious_wd", "best": True}, {"feature": "newton_schulz"},
            "cautious weight decay helps (phase 4)"),
    *[Confirm(f"geodesic_{m}", "geodesic", f"exact geodesic steps with θ = {t} beat step-then-project (each at its "
              "own lr)", {"mode": m}, {"mode": "none"}, "\"geodesic: 1-3% improvement\"")
      for m, t in (("lr", "lr"), ("lr_norm", "lr·‖T‖"))],
    *[Confirm(f"lazy_every_{k}", "lazy_projection", f"Muon projecting every {k} steps beats projecting every step "
              "(each at its own lr)", {"optimizer": "muon", "every": k}, {"optimizer": "muon", "every": 1},
              "\"Muon may benefit from less frequent projection\"") for k in LAZY_EVERY],
    Confirm("lazy_interaction_7", "lazy_projection", "Muon gains more than AdamW from projecting every 7 steps "
            "(the laziness interaction)", {"optimizer": "muon", "every": 7}, {"optimizer": "muon", "every": 1},
            "\"Muon may benefit from less frequent projection\"",
            minus=({"optimizer": "adamw", "every": 7}, {"optimizer": "adamw", "every": 1})),
    # issue 21 (architecture): declared now, run later
    *[Confirm(f"sphere_interaction_{m}", "architecture", f"Muon's advantage over AdamW is larger on {m} than on "
              "the matched GPT (gpt_swiglu)", {"model": m, "optimizer": "muon"}, {"model": m, "optimizer": "adamw"},
              "\"Muon's orthogonal gradient descent should be particularly effective for hypersphere-constrained "
              "optimization\"",
              minus=({"model": "gpt_swiglu", "optimizer": "muon"}, {"model": "gpt_swiglu", "optimizer": "adamw"}))
      for m in ("ngpt", "gated_ngpt")],
    Confirm("plan_config", "architecture", "the plan's configuration (gated nGPT, alpha 0.15, projection every 7, "
            "Muon at the plan's lr) beats its Adam baseline (lr 5e-4)", {"arm": "plan_muon"}, {"arm": "plan_adamw"},
            "Muon beats Adam on the plan's gated nGPT"),
]
KEYS = [c.key for c in FAMILY]
assert len(set(KEYS)) == len(KEYS), "family keys must be unique"


def entry(key: str) -> Confirm:
    """The declared comparison `key`; ValueError naming the valid keys."""
    for c in FAMILY:
        if c.key == key:
            return c
    raise ValueError(f"unknown confirmatory comparison {key!r}; declared: {', '.join(KEYS)}")


def of_campaign(name: str) -> list[Confirm]:
    return [c for c in FAMILY if c.campaign == name]


def paired_of(c: Confirm, df):
    """The Paired of `c` from a campaign's results (lab.results.results): its confirm-stage arms selected by tags."""
    from lab.results import arm_of, finals
    from lab.stats import interaction, paired
    conf = df[df.stage == "confirm"] if len(df) else df
    got = lambda tags: finals(conf, a, "confirm") if (a := arm_of(conf, **tags)) else {}
    if c.minus is None:
        return paired(got(c.treatment), got(c.control))
    return interaction(got(c.treatment), got(c.control), got(c.minus[0]), got(c.minus[1]))


def judge_all(preset: str = "cpu", read=None) -> dict:
    """{key: lab.stats.Judgement} over the whole family at `preset` (the campaigns' default-parameter records);
    `read(campaign) -> DataFrame` defaults to lab.results.results. Holm over every declared comparison."""
    from lab.results import results
    from lab.stats import Family, paired
    read = read or (lambda name: results(name, preset))
    frames, out = {}, {}
    for c in FAMILY:
        if c.campaign not in frames:
            try:
                frames[c.campaign] = read(c.campaign)
            except (FileNotFoundError, ValueError, KeyError):
                frames[c.campaign] = None
        df = frames[c.campaign]
        out[c.key] = paired_of(c, df) if df is not None and len(df) else paired({}, {})
    return {j.name: j for j in Family(tuple(KEYS)).judge(out)}
