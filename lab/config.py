"""One dataclass of defaults, three presets, `key=value` overrides, validated before any work starts."""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
from dataclasses import dataclass, fields
from pathlib import Path

NO_SPHERE = ("gpt", "gpt_swiglu")  # models without sphere parameters (no alpha, no projection, no geodesic)
MODELS = ("ngpt", "gated_ngpt", "gpt", "gpt_swiglu")
DATASETS = ("shakespeare", "fineweb")
OPTIMIZERS = ("muon", "adamw")  # muon = hybrid SimpleMuon (hidden matrices) + AdamW (the rest); adamw = baseline
ORTHOGONALIZERS = ("newton_schulz", "polar_express", "gram_newton_schulz")
GEODESIC = ("none", "lr", "lr_norm")
WANDB_MODES = ("disabled", "offline", "online")
DTYPES = ("auto", "fp32", "bf16")


@dataclass
class Config:
    # --- model ---
    model: str = "ngpt"            # ngpt | gated_ngpt | gpt (ReLU² pre-norm) | gpt_swiglu (nGPT's matched control)
    n_layer: int = 4
    n_embd: int = 128
    n_head: int = 4
    alpha_init: float = 0.05       # nGPT eigen step size alpha_A, alpha_M at init (NVIDIA 0.05; the plan: 0.15)
    seq_len: int = 128             # T
    vocab_size: int = 256          # bytes for shakespeare; 50304 (padded GPT-2) for fineweb
    # --- data ---
    data: str = "shakespeare"      # shakespeare (embedded, byte-level) | fineweb (GPT-2 token shards)
    data_dir: str = "data"         # where token shards live / are written
    batch_size: int = 16           # B: sequences per micro-batch (per process)
    grad_accum: int = 1            # micro-batches per optimizer step
    # --- run ---
    steps: int = 300
    seed: int = 0
    device: str = "auto"           # auto | cpu | cuda | cuda:N
    dtype: str = "auto"            # auto = bf16 autocast on CUDA, fp32 on CPU (bit-reproducible)
    compile: bool = False          # torch.compile the model (a win on GPU only)
    # --- optimizer ---
    optimizer: str = "muon"        # muon (hybrid) | adamw (every parameter on AdamW: the baseline)
    lr: float = 0.02               # peak Muon lr for hidden matrices (spectral-norm units)
    adamw_lr: float = 4e-3         # baseline AdamW lr (optimizer=adamw); each preset sets the value its sweep found
    embed_lr: float = 4e-3         # hybrid: AdamW lr of the token embedding
    head_lr: float = 4e-3          # hybrid: AdamW lr of lm_head
    scalar_lr: float = 4e-3        # hybrid: AdamW lr of 0-D/1-D params (alphas, scalers, gates, gains)
    adam_betas: tuple = (0.8, 0.95)
    adam_eps: float = 1e-10
    adam_weight_decay: float = 0.0  # nGPT trains with wd 0 (its weights are re-projected anyway)
    momentum: float = 0.95         # Muon momentum after warmup
    momentum_start: float = 0.85   # Muon momentum at step 0, linear to `momentum` ...
    momentum_warmup_frac: float = 0.25  # ... over this fraction of `steps` (modded: 300 of ~1300)
    nesterov: bool = True
    weight_decay: float = 0.0      # Muon decoupled weight decay at step 0, decays linearly to 0
    orthogonalizer: str = "newton_schulz"  # newton_schulz (Keller quintic) | polar_express
    ns_steps: int = 5
    normuon: bool = False          # NorMuon per-row/column variance reduction
    beta2: float = 0.95            # NorMuon second-moment EMA
    cautious_wd: bool = False      # decay only where update and weight share sign
    geodesic: str = "none"         # none | lr | lr_norm: exact per-vector exp-map step on the sphere
    project_every: int = 1         # project sphere matrices after every N-th optimizer step (nGPT: 1)
    use_kernels: bool = True       # Triton XXT / ba_plus_cAA on CUDA (torch elsewhere)
    grad_clip: float = 0.0         # 0 = off
    # --- schedule (fractions of `steps`) ---
    warmup_frac: float = 0.0
    warmdown_frac: float = 0.3     # linear warmdown to 0 over the last fraction of steps
    # --- eval / records ---
    val_every: int = 0             # evaluate every N steps; 0 = auto: steps // 16 (>= 16 points per curve)
    val_batches: int = 8
    ckpt_every: int = 100          # 0 = only at the end
    diverge_factor: float = 1.5    # loss > factor * initial loss (or non-finite) => diverged
    runs_dir: str = "runs"
    campaign: str = ""             # set by campaigns: wandb group and report grouping
    wandb: str = "disabled"        # disabled | offline | online
    wandb_project: str = "lab"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def run_id(self, world_size: int = 1) -> str:
        """A run's identity: a hash of what determines its numbers, and only that. Settings this run never reads
        (adamw_lr in a Muon run, Muon's settings in an AdamW run, beta2 without NorMuon) and where records go are
        left out; a field added after the first records is left out while it holds its NEUTRAL value (so adding a
        field re-hashes nothing); the world size (global batch) and the device type and precision actually used are
        in whenever they differ from one CPU process in fp32 (the setting every record before them was made in)."""
        unread = _NOT_IDENTITY | (_MUON_ONLY if self.optimizer == "adamw" else {"adamw_lr"})
        unread |= set() if self.normuon else {"beta2"}
        unread |= {"alpha_init"} if self.model in NO_SPHERE else set()  # the GPT baselines have no eigen step sizes
        d = {k: v for k, v in self.to_dict().items() if k not in unread and not (k in NEUTRAL and v == NEUTRAL[k])}
        if world_size != 1:
            d["_world_size"] = int(world_size)  # global batch = world_size x batch_size x grad_accum
        execution = self.execution()
        if execution != "cpu/fp32":
            d["_execution"] = execution  # CPU fp32 and CUDA bf16 never share an id
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]

    def execution(self) -> str:
        """'<device type>/<precision>' this config trains with here: 'cpu/fp32', 'cuda/bf16', ..."""
        kind = self.device.split(":")[0]
        if kind == "auto":
            import torch  # only here: a config is built and checked without torch
            kind = "cuda" if torch.cuda.is_available() else "cpu"
        bf16 = self.dtype == "bf16" or (self.dtype == "auto" and kind == "cuda")
        return f"{kind}/{'bf16' if bf16 else 'fp32'}"

    @classmethod
    def from_dict(cls, d: dict) -> Config:
        """A Config from a record's config.json: a field the record predates takes its NEUTRAL value (what the
        run did before the field existed), not today's default."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"config: unknown key(s) {unknown} in a recorded config; valid keys: {', '.join(names)}")
        d = {**{k: v for k, v in NEUTRAL.items() if k in names}, **d}
        return cls(**{**d, "adam_betas": tuple(d.get("adam_betas", cls.adam_betas))})

    @property
    def eval_every(self) -> int:
        """Steps between evaluations: val_every, or steps // 16 (at least 1) when val_every is 0."""
        return self.val_every or max(1, self.steps // 16)

    @property
    def momentum_warmup(self) -> int:
        """Muon momentum warmup in steps (a fraction of the run, so runs of any length warm up alike)."""
        return round(self.momentum_warmup_frac * self.steps)

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len * self.grad_accum


# Fields added after the first committed records, each with its neutral value: the value that reproduces the
# behaviour before the field existed (fixed when the field is added, never the current default). run_id leaves a
# field out while it holds this value, so every earlier record keeps its id.
NEUTRAL: dict[str, object] = {}

_NOT_IDENTITY = {"runs_dir", "data_dir", "campaign", "wandb", "wandb_project", "ckpt_every"}  # where, not what
_MUON_ONLY = {"lr", "embed_lr", "head_lr", "scalar_lr", "momentum", "momentum_start", "momentum_warmup_frac",
              "nesterov", "weight_decay", "orthogonalizer", "ns_steps", "normuon", "beta2", "geodesic", "use_kernels"}

# Defaults live here; a preset only lists what it changes from the dataclass defaults.
PRESETS: dict[str, dict] = {
    # seconds per run, for tests
    "smoke": dict(n_layer=2, n_embd=32, n_head=2, seq_len=32, batch_size=4, steps=12, val_every=6, val_batches=2,
                  ckpt_every=6, adamw_lr=8e-3, embed_lr=8e-3, head_lr=8e-3, scalar_lr=8e-3),
    # the plan's 400 steps on Shakespeare bytes (0.8M tokens: 400 x 16 x 128); ~8 min per run on one core of the
    # 2-core build machine. adamw_lr: lr_sweep's best AdamW lr at this preset (reports/MUON_LR_SWEEP_REPORT.md)
    "cpu": dict(steps=400, adamw_lr=8e-3),
    # the seed plan's gated nGPT on FineWeb10B (GPT-2 tokens), one H100; alpha 0.15 is the plan's
    "h100": dict(model="gated_ngpt", n_layer=11, n_embd=768, n_head=6, seq_len=1024, vocab_size=50304,
                 data="fineweb", batch_size=32, steps=400, val_every=25, val_batches=16, ckpt_every=200,
                 alpha_init=0.15, adamw_lr=2e-3, embed_lr=2e-3, head_lr=2e-3, scalar_lr=2e-3, project_every=7),
}


def _choices(name: str) -> tuple | None:
    return {"model": MODELS, "data": DATASETS, "optimizer": OPTIMIZERS, "orthogonalizer": ORTHOGONALIZERS,
            "geodesic": GEODESIC, "wandb": WANDB_MODES, "dtype": DTYPES}.get(name)


def _coerce(name: str, value, typ):
    """Turn a CLI/notebook value into the field's type, or raise naming the field and value."""
    if isinstance(value, str) and typ is not str:
        s = value.strip()
        try:
            if typ is bool:
                if s.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return s.lower() in ("true", "1", "yes")
            if typ is tuple:
                return tuple(float(x) for x in s.strip("()[] ").split(",") if x.strip())
            if typ is int and float(s).is_integer():
                return int(float(s))  # accepts "300", "3e2"
            return typ(s)
        except ValueError:
            raise ValueError(f"config: {name}={value!r} is not a valid {typ.__name__}") from None
    if value is None and name == "geodesic":
        return "none"
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ is tuple and isinstance(value, list):
        return tuple(value)
    if typ is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise ValueError(f"config: {name}={value!r} must be {typ.__name__}, got {type(value).__name__}")
    return value


_TYPES = {"str": str, "int": int, "float": float, "bool": bool, "tuple": tuple}


def get_config(preset: str = "cpu", **overrides) -> Config:
    """The validated config of `preset` with `overrides` applied. Raises ValueError before any work is done."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    types = {f.name: _TYPES[f.type] if isinstance(f.type, str) else f.type for f in fields(Config)}
    unknown = sorted(set(overrides) - set(types))
    if unknown:
        near = {k: difflib.get_close_matches(k, types, n=1) for k in unknown}
        hint = "".join(f" (did you mean {m[0]!r} for {k!r}?)" for k, m in near.items() if m)
        raise ValueError(f"unknown config key(s) {unknown}{hint}; valid keys: {', '.join(types)}")
    values = {**PRESETS[preset], **overrides}
    cfg = Config(**{k: _coerce(k, v, types[k]) for k, v in values.items()})
    validate(cfg)
    return cfg


def parse_overrides(items: list[str]) -> dict:
    """['lr=0.01', 'model=gpt'] -> {'lr': '0.01', 'model': 'gpt'} (typed later by get_config)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value")
        k, v = item.split("=", 1)
        out[k.strip()] = v
    return out


def validate(c: Config) -> None:
    """Refuse impossible values, naming the value and what is allowed."""
    for f in fields(Config):
        v = getattr(c, f.name)
        ch = _choices(f.name)
        if ch and v not in ch:
            raise ValueError(f"config: {f.name}={v!r}; valid choices: {', '.join(ch)}")
        if any(isinstance(x, float) and not math.isfinite(x) for x in (v if isinstance(v, tuple) else (v,))):
            raise ValueError(f"config: {f.name}={v!r} must be a finite number (nan and inf are refused)")
    for name in ("lr", "adamw_lr", "embed_lr", "head_lr", "scalar_lr", "adam_eps", "alpha_init"):
        if not getattr(c, name) > 0:
            raise ValueError(f"config: {name}={getattr(c, name)!r} must be > 0")
    for name in ("momentum", "momentum_start", "beta2", "momentum_warmup_frac"):
        if not 0 <= getattr(c, name) < 1:
            raise ValueError(f"config: {name}={getattr(c, name)!r} must be in [0, 1)")
    if len(c.adam_betas) != 2 or not all(0 <= b < 1 for b in c.adam_betas):
        raise ValueError(f"config: adam_betas={c.adam_betas!r} must be two numbers in [0, 1)")
    for name in ("n_layer", "n_embd", "n_head", "seq_len", "vocab_size", "batch_size", "grad_accum", "steps",
                 "ns_steps", "project_every", "val_batches"):
        if getattr(c, name) < 1:
            raise ValueError(f"config: {name}={getattr(c, name)!r} must be >= 1")
    for name in ("weight_decay", "adam_weight_decay", "grad_clip", "ckpt_every", "val_every", "seed"):
        if getattr(c, name) < 0:
            raise ValueError(f"config: {name}={getattr(c, name)!r} must be >= 0")
    if c.n_embd % c.n_head or (c.n_embd // c.n_head) % 2:
        raise ValueError(f"config: n_embd={c.n_embd} must split into n_head={c.n_head} heads of even size (RoPE)")
    if not (0 <= c.warmup_frac <= 1 and 0 <= c.warmdown_frac <= 1 and c.warmup_frac + c.warmdown_frac <= 1):
        raise ValueError(f"config: warmup_frac={c.warmup_frac}, warmdown_frac={c.warmdown_frac} must be in [0, 1] "
                         "and sum to at most 1")
    if c.diverge_factor <= 1:
        raise ValueError(f"config: diverge_factor={c.diverge_factor} must be > 1")
    if c.data == "shakespeare" and c.vocab_size != 256:
        raise ValueError(f"config: vocab_size={c.vocab_size} but the shakespeare corpus is bytes (vocab_size=256)")
    if c.data == "fineweb" and c.vocab_size < 50257:
        raise ValueError(f"config: vocab_size={c.vocab_size} is smaller than the GPT-2 vocabulary of fineweb (50257)")
    if not (c.device in ("auto", "cpu", "cuda") or c.device.startswith("cuda:")):
        raise ValueError(f"config: device={c.device!r}; valid: auto, cpu, cuda, cuda:N")
    if c.geodesic != "none" and c.optimizer != "muon":
        raise ValueError(f"config: geodesic={c.geodesic!r} needs optimizer='muon' (it is a SimpleMuon option)")
    _check_runs_dir(c.runs_dir)
    if c.geodesic != "none" and c.model in NO_SPHERE:
        raise ValueError(f"config: geodesic={c.geodesic!r} needs a model with sphere parameters (ngpt, gated_ngpt); "
                         f"model={c.model!r} has none")


def _check_runs_dir(runs_dir: str) -> None:
    """An empty runs_dir would put run directories in the current directory, and one under a file cannot be
    created: both refused before any work."""
    if not runs_dir.strip():
        raise ValueError(f"config: runs_dir={runs_dir!r} is empty; give a directory (default: runs/<preset>)")
    path = Path(runs_dir)
    existing = next(p for p in (path, *path.parents) if p.exists())  # a relative path's parents end at '.'
    if not existing.is_dir():
        where = "is" if existing == path else f"is under {existing}, which is"
        raise ValueError(f"config: runs_dir={runs_dir!r} {where} not a directory")
