"""FusedPPHGNet with our kernels (backend="triton" and "cuda") end to end against float64 eager.

On the CPU: Triton's interpreter and the CUDA emulator, on the narrow PP-HGNet (tiny's every form at
a tenth of its widths: the executor's glue does not depend on them); on a GPU (gpu_check.sh), for
real, at tiny's, small's and base's widths.
"""
import copy

import pytest
import torch

import hgnet_kernels as hk
from hgnet_kernels.backends import BackendUnavailable, unavailable_reason
from hgnet_kernels.numerics import FP32_REL_TOL, relative_error, tolerance

from helpers import DEVICE, float64_reference, narrow_pphgnet, randomize


@pytest.fixture(params=["triton", "cuda"])
def backend(request):
    return request.param


def check_against_eager(model, x, dtype, backend, **options):
    fused = hk.FusedPPHGNet(model.to(DEVICE), backend=backend, dtype=dtype, **options)
    x = x.to(DEVICE)
    with torch.no_grad():
        ref = float64_reference(model)
        expected_feats = ref.forward_features(x.double())
        expected = ref.forward_head(expected_feats[-1])
        eager_model = copy.deepcopy(model).to(dtype)
        eager_feats = eager_model.forward_features(x.to(dtype))
        eager = eager_model.forward_head(eager_feats[-1])

    def allowed(eager_out, exact):  # each output against eager's own error on that output
        return FP32_REL_TOL if dtype == torch.float32 else tolerance(dtype, relative_error(eager_out, exact))
    # The stage maps and the logits of one pass through the executor (what forward_features and
    # forward each run in full); both methods on these backends: test_guarantees.py's tests.
    *features, logits = fused._backend.run(fused.check_input(x), fused.out_indices + (len(fused.plan.features),))
    assert logits.dtype == dtype and logits.shape == expected.shape
    assert relative_error(logits, expected) <= allowed(eager, expected)
    for got, want, eager_feat in zip(features, expected_feats, eager_feats, strict=True):
        assert got.shape == want.shape
        assert relative_error(got, want) <= allowed(eager_feat, want)
    return fused, logits


# Two images of odd sizes at every stage (33×47 → 17×24 → 9×12 → 5×6 → 3×3): GEMM row tiles
# across images and partial tiles everywhere. One image at fp32: test_resolved_launches.py's
# narrow float32 cases, against float64 too. Bitwise determinism of these backends:
# test_guarantees.py::test_bitwise_deterministic.
def test_fp32(backend):
    check_against_eager(narrow_pphgnet(seed=11), torch.randn(2, 3, 33, 47), torch.float32, backend)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_low_precision(backend, dtype):
    check_against_eager(narrow_pphgnet(seed=12), torch.randn(1, 3, 32, 32), dtype, backend)


def test_cuda_graph_needs_cuda(backend):
    if DEVICE == "cuda":
        pytest.skip("this checks the CPU error; the GPU tests cover cuda_graph=True")
    with pytest.raises(ValueError, match="cuda_graph=True needs a CUDA device"):
        hk.FusedPPHGNet(hk.pphgnet_tiny(), backend=backend, cuda_graph=True)


@pytest.mark.parametrize("backend,variable", [("triton", "TRITON_INTERPRET"), ("cuda", "HGNET_KERNELS_CUDA_EMULATE")])
def test_cpu_without_interpreter_or_emulator_is_a_clear_error(monkeypatch, backend, variable):
    monkeypatch.setenv(variable, "0")
    reason = unavailable_reason(backend, torch.device("cpu"), torch.float32)
    assert "need" in reason and "CUDA GPU" in reason and f"{variable}=1" in reason
    with pytest.raises(BackendUnavailable, match=f"{variable}=1"):
        hk.FusedPPHGNet(hk.pphgnet_tiny(), backend=backend)


@pytest.mark.gpu
@pytest.mark.parametrize("size", ["tiny", "small", "base"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_real_size_on_gpu(backend, size, dtype):
    check_against_eager(randomize(hk.PPHGNet(size), seed=14), torch.randn(8, 3, 224, 224), dtype, backend)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_cuda_graph_replay_matches_plain_launches(backend, dtype):
    model = randomize(hk.PPHGNet("tiny"), seed=15).cuda()
    plain = hk.FusedPPHGNet(model, backend=backend, dtype=dtype, cuda_graph=False)
    graphed = hk.FusedPPHGNet(model, backend=backend, dtype=dtype, max_graphs=2)  # graphs: the default on CUDA
    assert graphed._backend.cuda_graph and not plain._backend.cuda_graph
    for shape in [(1, 3, 224, 224), (4, 3, 224, 224), (1, 3, 256, 192), (1, 3, 224, 224)]:
        x = torch.randn(shape, device="cuda")
        first = graphed(x)
        assert torch.equal(first, plain(x))
        kept = first.clone()
        graphed(torch.randn_like(x))  # the next replay must not overwrite what the first call returned
        assert torch.equal(first, kept)
        for got, want in zip(graphed.forward_features(x), plain.forward_features(x)):
            assert torch.equal(got, want)
    assert len(graphed._backend._graphs) == 2
