"""The benchmarks at `--size tiny`, so their code cannot rot. No timing assertions: only that each section runs,
writes its tables, plots and ratios, and that tiny runs never touch reports/BENCHMARKS.md."""
import math
import re

import pytest
import torch

from lab import bench
from lab.cli import main

SECTIONS = ["## 1. Orthogonalization", "## 2. Optimizer step overhead", "## 3. Whole training step",
            "## 4. Multi-GPU traffic", "## 5. Training loop overhead", "## 6. CUDA"]
FIGS = ["bench_scalar_maps.png", "bench_ortho_tradeoff.png", "bench_optimizer.png"]


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    nxt = text.find("\n## ", start + 1)
    return text[start:nxt if nxt > 0 else None]


def _headline_numbers(section: str) -> list[float]:
    """The bold numbers of every headline paragraph of a section (a paragraph may wrap over several lines)."""
    paragraphs = [p.strip() for p in section.split("\n\n") if p.strip().startswith("**Headline:**")]
    return [float(x) for p in paragraphs for x in re.findall(r"\*\*([-+0-9.eE]+|nan)x?\*\*", p)]


def test_all_benchmarks_tiny(dirs):
    real = bench.ROOT / "reports" / "BENCHMARKS.md"
    before = real.stat().st_mtime_ns if real.exists() else None
    assert main(["bench", "--size", "tiny"]) == 0
    report = dirs / "reports" / "BENCHMARKS.md"
    text = report.read_text()
    for h in SECTIONS:
        assert h in text
    assert "how to rerun" in text.lower() and "make bench" in text
    for key in ("git commit", "device", "torch / triton", "torch threads", "Wall time per section"):
        assert key in text
    for f in FIGS:
        png = dirs / "reports" / "figs" / f
        assert png.exists() and png.read_bytes()[:4] == b"\x89PNG"
        assert f"figs/{f}" in text

    ortho = _section(text, SECTIONS[0])
    nums = _headline_numbers(ortho)
    assert len(nums) == 3 + 4 and all(math.isfinite(x) and x > 0 for x in nums)  # PE/NS; stacked, Gram (time, dist)
    assert "| shape" in ortho and "x AdamW" in ortho and "gauss dist" in ortho and "ill dist" in ortho
    for row in ("standard per-matrix", "stacked", "Gram + stacked", "identical (torch.equal)", "bf16 dist gauss"):
        assert row in ortho
    opt = _section(text, SECTIONS[1])
    nums = _headline_numbers(opt)
    assert len(nums) == 2 and all(math.isfinite(x) and x > 0 for x in nums)
    for arm in ("AdamW (baseline, all params)", "Muon NS5 + AdamW", "Muon PE5 + AdamW", "Muon Gram-NS5 + AdamW",
                "NorMuon NS5 + AdamW", "torch.optim.Muon + AdamW"):
        assert arm in opt
    assert "state bytes / param byte" in opt
    step = _section(text, SECTIONS[2])
    nums = _headline_numbers(step)
    assert len(nums) == 4 and all(math.isfinite(x) and x > 0 for x in nums)  # ratios and shares, before and after
    assert "per matrix (before)" in step and "stacked (after)" in step and "shared" in step
    traffic = _section(text, SECTIONS[3])
    nums = _headline_numbers(traffic)
    assert len(nums) == 2 and all(math.isfinite(x) and x > 0 for x in nums)  # bytes per parameter before, after
    assert "| before" in traffic and "| after" in traffic
    loop = _section(text, SECTIONS[4])
    (ratio,) = _headline_numbers(loop)
    assert math.isfinite(ratio) and ratio > 0
    assert "| True" in loop  # the bare loop computes exactly what lab.train computes
    assert "Sample efficiency" not in text  # steps-to-target lives in the horizon report
    cuda = _section(text, SECTIONS[5])
    if not torch.cuda.is_available():
        assert "skipped: no CUDA" in cuda

    # a subset replaces only its own sections
    bench.run_benchmarks(["cuda"], size="tiny")
    again = report.read_text()
    assert _section(again, SECTIONS[0]) == ortho and _section(again, SECTIONS[4]) == loop
    assert (real.stat().st_mtime_ns if real.exists() else None) == before  # reports/BENCHMARKS.md untouched


def test_tiny_never_writes_the_real_report(monkeypatch):
    monkeypatch.delenv("LAB_REPORTS_DIR", raising=False)
    monkeypatch.delenv("LAB_RUNS_DIR", raising=False)
    path = bench.run_benchmarks(["cuda"], size="tiny")
    assert path.exists() and bench.ROOT / "reports" not in path.parents


def test_unknown_benchmark_is_refused(dirs):
    with pytest.raises(ValueError, match="valid: orthogonalization"):
        bench.run_benchmarks(["nope"], size="tiny")
    assert main(["bench", "nope", "--size", "tiny"]) == 2
