"""The CUDA path (Triton kernels in bf16 on the preset shapes, bf16 autocast training). Skipped without a GPU;
run on a GPU box with `python -m pytest tests/test_gpu.py`. ALGORITHMS.md section 13 items 7-9."""
import pytest
import torch

from lab.config import get_config
from lab.optim import SimpleMuon, kernels, newton_schulz, polar_express

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.mark.parametrize("shape", [(768, 768), (768, 3072), (1000, 777), (4, 768, 768), (3, 256, 768)])
def test_xxt_matches_torch_and_is_symmetric(shape):
    A = torch.randn(shape, device="cuda").bfloat16()
    C = kernels.xxt(A)
    assert torch.equal(C, C.mT)
    assert _rel(C, A.float() @ A.float().mT) < 1e-2


@pytest.mark.parametrize("shape", [(768, 768), (2, 1024, 1024), (777, 777)])
def test_ba_plus_caa_matches_torch_and_is_symmetric(shape):
    X = torch.randn(*shape[:-1], 2 * shape[-1], device="cuda") / shape[-1] ** 0.5
    S = (X @ X.mT).bfloat16()
    C = kernels.ba_plus_caa(S, alpha=2.0315, beta=-4.7750)
    assert torch.equal(C, C.mT)
    ref = -4.7750 * S.float() + 2.0315 * S.float() @ S.float()
    assert _rel(C, ref) < 1e-2


@pytest.mark.parametrize("orth", [newton_schulz, polar_express])
@pytest.mark.parametrize("shape", [(768, 3072), (3072, 768), (4, 768, 768)])
def test_orthogonalizer_with_kernels_equals_torch_path(orth, shape):
    G = torch.randn(shape, device="cuda").bfloat16()
    with_k, without = orth(G, use_kernels=True), orth(G, use_kernels=False)
    assert with_k.dtype == torch.bfloat16 and _rel(with_k, without) < 2e-2
    sv = torch.linalg.svdvals(with_k.float())
    lo, hi = (0.84, 1.16) if orth is polar_express else (0.66, 1.22)
    assert lo < sv.min() and sv.max() < hi


def test_simple_muon_on_cuda_matches_torch_muon():
    torch.manual_seed(0)
    p0 = torch.randn(768, 3072, device="cuda")
    a, b = torch.nn.Parameter(p0.clone()), torch.nn.Parameter(p0.clone())
    ours = SimpleMuon([a], lr=0.02, momentum=0.95, weight_decay=0.1)
    ref = torch.optim.Muon([b], lr=0.02, momentum=0.95, weight_decay=0.1, adjust_lr_fn="original")
    for _ in range(3):
        g = torch.randn_like(p0)
        a.grad, b.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
    assert (a - b).abs().max() < 0.03 * (a - p0).abs().max()


def test_cpu_preset_trains_on_cuda_with_bf16_autocast(tmp_path):
    from lab.train import train
    c = get_config("cpu", steps=40, val_every=20, device="cuda", runs_dir=str(tmp_path), data_dir=str(tmp_path / "d"))
    s = train(c, progress=False)
    assert s["status"] == "finished" and s["final_val_loss"] < 4.0


def test_xxt_fp32_is_exact_not_tf32():
    """fp32 inputs use tl.dot's IEEE mode: TF32 (the default) is ~1e-3 off, IEEE ~1e-6."""
    A = torch.randn(1000, 777, device="cuda")
    C = kernels.xxt(A)
    ref = (A.double() @ A.double().mT)
    assert _rel(C.double(), ref) < 1e-5


def test_checkpoint_and_resume_on_cuda_equals_an_uninterrupted_run(tmp_path):
    """Resume on the run's device: the CPU RNG state is restored on the CPU (set_rng_state takes a CPU ByteTensor)."""
    from lab.train import train
    kw = dict(steps=24, val_every=12, ckpt_every=8, device="cuda", data_dir=str(tmp_path / "d"))
    full = train(get_config("cpu", runs_dir=str(tmp_path / "a"), **kw), progress=False)
    c = get_config("cpu", runs_dir=str(tmp_path / "b"), **kw)
    with pytest.raises(KeyboardInterrupt):
        train(c, progress=False, _stop_at=12)  # killed after step 12; ckpt.pt of step 8 left in place
    resumed = train(c, progress=False)
    assert resumed["status"] == "finished" and resumed["steps"] == 24
    assert abs(resumed["final_val_loss"] - full["final_val_loss"]) < 1e-3  # bf16 autocast: not bit for bit


# --- what `make gpu-check` (lab.gpucheck) relies on --------------------------------------------------------------

def test_gpucheck_finds_this_gpu_from_its_device_nodes():
    """The check decides 'no GPU' from device nodes before importing torch: this GPU must show one of them."""
    from lab import gpucheck
    assert gpucheck.gpu_status() == ("cuda", torch.cuda.get_device_name(0))


def test_h100_shapes_on_synthetic_fineweb_launch_kernels_in_bf16_and_report_mfu(tmp_path):
    """The h100 model (2 of its 11 layers) on gpu-check's synthetic FineWeb shards: bf16 autocast, the Triton kernels
    launched by Muon, MFU in every training row where the device's peak is known."""
    from lab import gpucheck, records
    from lab.train import peak_flops, train
    gpucheck.write_synthetic_fineweb(tmp_path / "d", 400_000, 100_000)
    c = get_config("h100", n_layer=2, steps=4, val_every=2, val_batches=2, ckpt_every=0, device="cuda",
                   data_dir=str(tmp_path / "d"), runs_dir=str(tmp_path / "r"))
    with gpucheck.counting_kernel_launches() as launches:
        s = train(c, progress=False)
    assert s["status"] == "finished" and c.execution() == "cuda/bf16" and launches[0] > 0
    rows = [r for r in records.read_metrics(tmp_path / "r" / c.run_id()) if "train_loss" in r]
    assert len(rows) == 4
    if peak_flops(torch.device("cuda")):
        assert all(0 < r["mfu"] < 1 for r in rows)
    else:
        assert not any("mfu" in r for r in rows)


def test_gpucheck_resume_check_on_cuda(tmp_path):
    """gpu-check's killed-and-resumed comparison at its tiny size, on CUDA in bf16 (tested bit for bit on CPU)."""
    from lab import gpucheck
    p = gpucheck.SIZES["tiny"]
    gpucheck.write_synthetic_fineweb(tmp_path / "d", *p["shard_tokens"])
    c = get_config(p["preset"], **p["overrides"], device="cuda", data="fineweb", data_dir=str(tmp_path / "d"))
    r = gpucheck.resume_check(c, p["stop_at"], tmp_path / "runs", tol=1e-2)
    assert r["ok"] and r["resumed_from"] == r["ckpt_step"], {k: v for k, v in r.items() if k != "rows"}
