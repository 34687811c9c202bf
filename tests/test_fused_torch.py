"""FusedPPHGNet with the torch backend against a float64 eager reference."""
import pytest
import torch

import hgnet_kernels as hk

from helpers import float64_reference, randomize, rel_err


# Each model's widths once with several images, and one image at odd sizes (97×129) on tiny: the
# torch backend runs the same executor and oneDNN calls at any batch, so the cases dropped (tiny
# 1×64×64, small 1×97×129, base 1×64×64) checked nothing these do not.
@pytest.mark.parametrize("size,shape", [
    ("tiny", (4, 3, 64, 64)), ("tiny", (1, 3, 97, 129)), ("small", (4, 3, 32, 48)), ("base", (4, 3, 33, 65)),
])
def test_matches_float64_eager(size, shape):
    model = randomize(hk.PPHGNet(size), seed=sum(shape))
    ref = float64_reference(model)
    fused = hk.FusedPPHGNet(model, backend="torch")
    x = torch.randn(shape)
    with torch.no_grad():
        expected_feats = ref.forward_features(x.double())
        expected = ref.forward_head(expected_feats[-1])
    assert rel_err(fused(x), expected) <= 1e-5
    for got, want in zip(fused.forward_features(x), expected_feats):
        assert got.shape == want.shape
        assert rel_err(got, want) <= 1e-5


def test_folding_really_uses_bn_statistics():
    model = randomize(hk.PPHGNet("tiny"), seed=1)
    fused = hk.FusedPPHGNet(model, backend="torch")
    x = torch.randn(1, 3, 64, 64)
    before = fused(x)
    with torch.no_grad():
        model.stages[1].blocks[0].layers[2].bn.running_var.mul_(4)
    assert rel_err(hk.FusedPPHGNet(model, backend="torch")(x), before) > 1e-3
    assert torch.equal(fused(x), before)  # the fused copy does not follow later edits


def test_accepts_timm_model():
    timm = pytest.importorskip("timm")
    theirs = randomize(timm.create_model("hgnet_tiny", pretrained=False), seed=2)
    fused = hk.FusedPPHGNet(theirs)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        assert rel_err(fused(x), theirs.double()(x.double())) <= 1e-5


def test_auto_is_torch_on_cpu_and_unknown_backend_is_an_error():
    model = hk.pphgnet_tiny()
    assert hk.FusedPPHGNet(model).backend == "torch"
    with pytest.raises(ValueError, match="unknown backend 'fast'"):
        hk.FusedPPHGNet(model, backend="fast")


def test_requires_eval_mode_and_running_stats():
    model = hk.PPHGNet("tiny").train()
    with pytest.raises(ValueError, match="eval mode"):
        hk.FusedPPHGNet(model)
    model.eval()
    model.stem[0].bn.running_var = None
    with pytest.raises(ValueError, match="running statistics"):
        hk.FusedPPHGNet(model)


@pytest.mark.parametrize("bad,error,match", [
    (torch.randn(3, 64, 64), ValueError, "rank 4.*unsqueeze"),
    (torch.randn(1, 4, 64, 64), ValueError, "3 channels, got 4"),
    (torch.randn(1, 64, 64, 3), ValueError, "permute"),
    (torch.randint(0, 255, (1, 3, 64, 64), dtype=torch.uint8), TypeError, r"call \.float\(\)"),
    (torch.randn(1, 3, 16, 64), ValueError, "at least 32"),
    ([[1.0]], TypeError, "torch.Tensor"),
])
def test_bad_inputs_are_clear_errors(bad, error, match):
    fused = hk.FusedPPHGNet(hk.pphgnet_tiny(), backend="torch")
    with pytest.raises(error, match=match):
        fused(bad)


def test_no_autograd_graph_and_dtype_conversion():
    model = randomize(hk.PPHGNet("tiny"), seed=3)
    fused = hk.FusedPPHGNet(model, backend="torch")
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64, requires_grad=True)
    out = fused(x)
    assert out.dtype == torch.float32 and not out.requires_grad and out.grad_fn is None
    with torch.no_grad():
        assert rel_err(out, float64_reference(model)(x)) <= 1e-5


def test_non_contiguous_and_channels_last_inputs():
    model = randomize(hk.PPHGNet("tiny"), seed=4)
    fused = hk.FusedPPHGNet(model, backend="torch")
    base = torch.randn(2, 3, 80, 70)
    variants = [base.contiguous(memory_format=torch.channels_last), base[:, :, 5:70, 3:67],
                base.transpose(2, 3), base[:, [2, 1, 0]], base[:1].expand(3, -1, -1, -1)]
    ref = float64_reference(model)
    for x in variants:
        with torch.no_grad():
            assert rel_err(fused(x), ref(x.double())) <= 1e-5


def test_state_dict_round_trip_and_empty_batch():
    model = randomize(hk.PPHGNet("tiny"), seed=5)
    fused = hk.FusedPPHGNet(model, backend="torch")
    other = hk.FusedPPHGNet(hk.PPHGNet("tiny").eval(), backend="torch")
    x = torch.randn(1, 3, 64, 64)
    assert not torch.equal(other(x), fused(x))  # runs once, so derived weights are cached
    other.load_state_dict(fused.state_dict())
    assert torch.equal(other(x), fused(x))
    assert fused(torch.randn(0, 3, 64, 64)).shape == (0, 1000)


@pytest.mark.parametrize("backend,options,message", [
    ("torch", dict(cuda_graph=True), "backend 'torch' does not take the option 'cuda_graph'; CUDA graphs need"),
    ("auto", dict(cuda_graph=True), "chosen by 'auto' on cpu"),
    ("cuda", dict(allow_tf32=True), r"backend 'cuda' does not take the option 'allow_tf32'.*cuda_graph"),
    ("triton", dict(max_graphs="8"), r"max_graphs='8'.*expected int"),
    ("triton", dict(cuda_graph=1), r"cuda_graph=1.*expected bool"),
])
def test_backend_options_are_checked_against_the_backend(backend, options, message):
    if torch.cuda.is_available():
        pytest.skip("the CPU's option errors")
    with pytest.raises(ValueError, match=message):
        hk.FusedPPHGNet(hk.pphgnet_tiny(), backend=backend, **options)


def test_float64_model_computes_in_float32():
    model = randomize(hk.PPHGNet("tiny"), seed=6).double()
    fused = hk.FusedPPHGNet(model, backend="torch")
    assert fused.dtype == torch.float32
