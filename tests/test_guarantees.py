"""Runtime guarantees and ecosystem fit (README: "Guarantees and limits"), for every backend that
runs here: torch for real, triton through Triton's interpreter, cuda through the CPU emulator, on the
narrow PP-HGNet (tiny's every form at a tenth of its widths: these guarantees are the executor's and
the module's, not the widths'); the gpu-marked tests run tiny itself on a GPU."""
import copy
import gc
import os
import io
import pickle
import threading
import weakref

import pytest
import torch

import hgnet_kernels as hk
from hgnet_kernels.numerics import FP32_REL_TOL, relative_error, tolerance

from helpers import DEVICE, float64_reference, narrow_pphgnet, randomize

BACKENDS = ["torch", "triton", "cuda"]


_SHARED = weakref.WeakSet()  # module-scoped fixtures: every test of the file sees the same object


@pytest.fixture(scope="module")
def model():
    shared = narrow_pphgnet(seed=21).to(DEVICE)
    _SHARED.add(shared)
    return shared


@pytest.fixture(scope="module")
def tiny():
    shared = randomize(hk.PPHGNet("tiny"), seed=21).to(DEVICE)
    _SHARED.add(shared)
    return shared


@pytest.fixture(autouse=True)
def _shared_fixtures_are_never_converted_in_place(monkeypatch):
    """``model.cpu()`` on the shared model would hand every later test of the file a CPU model on a
    GPU machine (and is a no-op here, so nothing else would notice): converting it is an error."""
    apply = torch.nn.Module._apply

    def guarded(module, fn, *args, **kwargs):
        if module in _SHARED:
            raise AssertionError("a test converted a module-scoped model fixture in place; convert a copy "
                                 "(copy.deepcopy(model).cpu())")
        return apply(module, fn, *args, **kwargs)
    monkeypatch.setattr(torch.nn.Module, "_apply", guarded)


@pytest.fixture(scope="module", params=BACKENDS)
def fused(request, model):
    shared = hk.FusedPPHGNet(model, backend=request.param)
    _SHARED.add(shared)
    return shared


@pytest.fixture(scope="module")
def image_and_logits(fused):
    """Two images and ``fused``'s logits for them: the tests comparing ``fused`` or its copies against
    them share that forward (a few seconds each through Triton's interpreter)."""
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5)).to(DEVICE)
    return x, fused(x)


# ---- numbers at the edges --------------------------------------------------------------------

def test_nan_and_inf_propagate_like_eager(fused, model):
    x = torch.randn(2, 3, 40, 36, device=DEVICE)
    x[0, 1, 7, 9] = float("nan")
    x[1, 0, 20, 3] = float("inf")
    with torch.no_grad():
        expected = model(x)
    got = fused(x)
    assert torch.equal(torch.isfinite(got), torch.isfinite(expected))
    assert not torch.isfinite(got).any()  # one bad pixel reaches every logit through the ESE means


def test_near_zero_variance_and_huge_gamma_fold_safely():
    model = randomize(hk.PPHGNet("tiny"), seed=22)
    with torch.no_grad():
        bn = model.stages[0].blocks[0].layers[1].bn
        bn.running_var[:8] = 0.0           # only eps keeps the scale finite
        bn.weight[8:16] = 1e4               # a scale of ~1e4 / sqrt(var + eps)
        bn.running_var[8:16] = 1e-6
    fused = hk.FusedPPHGNet(model, backend="torch")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = float64_reference(model)(x.double())
    assert torch.isfinite(fused.net.stages[0].blocks[0].layers[1].weight).all()
    assert relative_error(fused(x), expected) <= FP32_REL_TOL


@pytest.mark.parametrize("backend", BACKENDS)
def test_fp16_overflow_is_inf_like_eager(backend, model):
    """fp16 tops out at 65504: inputs scaled past it overflow to inf/NaN, as eager fp16 does (we do
    not clamp or rescale silently). Documented in the README."""
    x = torch.randn(2, 3, 32, 32, device=DEVICE)
    x[0] *= 1e5  # one batch: the overflowing image must not reach its neighbour either
    fused = hk.FusedPPHGNet(model, backend=backend, dtype=torch.float16)
    logits = fused(x)
    assert not torch.isfinite(logits[0]).all() and torch.isfinite(logits[1]).all()


def test_noncontiguous_inputs_on_every_backend(fused, model):
    """The input's strides reach only the stem's first conv (every later op reads the executor's own
    channels_last buffers), so each layout is checked on the stage-1 map, the first the executor
    returns; the whole network from a contiguous input: test_fused_kernels.py::test_fp32."""
    base = torch.randn(2, 3, 35, 33, device=DEVICE)
    ref = float64_reference(model)
    for x in (base.transpose(2, 3), base[:, [2, 0, 1], 2:34, 1:33], base[:1].expand(2, -1, -1, -1),
              base.contiguous(memory_format=torch.channels_last)):
        with torch.no_grad():
            stage1 = fused._backend.run(fused.check_input(x), (0,))[0]
            assert relative_error(stage1, ref.forward_features(x.double())[0]) <= FP32_REL_TOL


def test_empty_batch_like_eager(fused, model):
    x = torch.randn(0, 3, 64, 48, device=DEVICE)
    with torch.no_grad():
        expected = model.forward_features(x)
    assert fused(x).shape == (0, 1000)
    assert [f.shape for f in fused.forward_features(x)] == [f.shape for f in expected]


# ---- runtime guarantees ----------------------------------------------------------------------

def test_bitwise_deterministic(fused, image_and_logits):
    x, first = image_and_logits  # two images: GEMM row tiles across both
    assert torch.equal(first, fused(x.clone()))  # the replay of the launches resolved by the first call
    if fused.backend == "torch" or DEVICE == "cuda":  # interpreters are slow
        x = torch.randn(32, 3, 32, 32, device=DEVICE)
        assert torch.equal(fused(x), fused(x.clone()))


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_no_memory_growth_over_1000_calls_torch_backend(model):
    fused = hk.FusedPPHGNet(copy.deepcopy(model).cpu(), backend="torch")
    x = torch.randn(1, 3, 32, 32)
    for _ in range(50):
        fused(x)
    gc.collect()
    before = _rss_bytes()
    for _ in range(1000):
        fused(x)
    gc.collect()
    growth = _rss_bytes() - before
    assert growth < 8 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB over 1000 calls"


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "cuda"])
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_no_gpu_memory_growth_over_1000_calls(backend, cuda_graph, tiny):
    fused = hk.FusedPPHGNet(tiny, backend=backend, cuda_graph=cuda_graph)
    x = torch.randn(4, 3, 224, 224, device="cuda")
    for _ in range(20):
        fused(x)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    for _ in range(1000):
        fused(x)
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() - before <= 2**20


def assert_two_threads_agree(fused, inputs, calls):
    """Two threads call ``fused`` on their own input ``calls`` times; every result must equal the
    single-threaded one."""
    expected = [fused(x) for x in inputs]
    errors = []

    def work(i):
        for _ in range(calls):
            if not torch.equal(fused(inputs[i]), expected[i]):
                errors.append(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_two_threads_share_one_model(model):
    fused = hk.FusedPPHGNet(model, backend="torch")
    assert_two_threads_agree(fused, [torch.randn(2, 3, 48, 48, device=DEVICE) for _ in range(2)], 25)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_two_threads_share_one_graphed_model_on_gpu(backend, tiny):
    fused = hk.FusedPPHGNet(tiny, backend=backend, cuda_graph=True)
    assert_two_threads_agree(fused, [torch.randn(2, 3, 224, 224, device="cuda") for _ in range(2)], 50)


def test_state_dict_round_trip_and_dtype_move(fused, model, image_and_logits):
    x, expected = image_and_logits
    other = hk.FusedPPHGNet(narrow_pphgnet(seed=99).to(DEVICE), backend=fused.backend)
    other.load_state_dict(fused.state_dict())
    assert torch.equal(other(x), expected)
    moved = copy.deepcopy(fused).to(torch.bfloat16)
    got = moved(x)
    assert moved.dtype == torch.bfloat16 and got.dtype == torch.bfloat16
    with torch.no_grad():
        exact = float64_reference(model)(x.double())
        eager_err = relative_error(copy.deepcopy(model).to(torch.bfloat16)(x.bfloat16()), exact)
    assert relative_error(got, exact) <= tolerance(torch.bfloat16, eager_err)
    assert torch.equal(fused(x), expected)  # the original is untouched by the copy's move


def test_pickle_and_torch_save_round_trip(fused, image_and_logits):
    """Data-loader workers, Ray and torch.save(module) pickle the module: the copy rebuilds its
    backend and gives the same bits."""
    x, expected = image_and_logits
    restored = pickle.loads(pickle.dumps(fused))
    buffer = io.BytesIO()
    torch.save(fused, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    for copy_ in (restored, loaded):
        assert copy_.backend == fused.backend and copy_._network_id != fused._network_id
        assert torch.equal(copy_(x), expected)


@pytest.mark.parametrize("convert,error,message", [
    (lambda m: m.double(), ValueError, "cannot convert it to torch.float64"),
    (lambda m: m.to(torch.float64), ValueError, "cannot convert it to torch.float64"),
    (lambda m: m.type(torch.float64), ValueError, "cannot convert it to torch.float64"),
    (lambda m: m.to("meta"), hk.BackendUnavailable, "device type 'meta' is not supported"),
    pytest.param(lambda m: m.cuda(), (RuntimeError, AssertionError), None, id="cuda-without-gpu",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")),
], ids=["double", "to-float64", "type-float64", "to-meta", "cuda-without-gpu"])
def test_conversions_that_cannot_be_served_change_nothing(model, convert, error, message):
    """Checked first, converted after: a refused conversion leaves every weight as it was."""
    fused = hk.FusedPPHGNet(model, backend="torch")
    x = torch.randn(1, 3, 32, 32, device=DEVICE)
    expected = fused(x)
    before = {k: v.clone() for k, v in fused.state_dict().items()}
    with pytest.raises(error, match=message):
        convert(fused)
    after = fused.state_dict()
    assert all(torch.equal(after[k], v) and after[k].dtype == v.dtype and after[k].device == v.device
               for k, v in before.items())
    assert fused.dtype == torch.float32 and torch.equal(copy.deepcopy(fused)(x), expected)


def test_library_logs_instead_of_printing(capsys, model):
    fused = hk.FusedPPHGNet(model, backend="torch")
    fused(torch.randn(1, 3, 32, 32, device=DEVICE))
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


# ---- torch.library and torch.compile -----------------------------------------------------------

def test_opcheck_network_ops(model):
    fused = hk.FusedPPHGNet(model, backend="torch")
    x = torch.randn(2, 3, 40, 36, device=DEVICE)
    torch.library.opcheck(torch.ops.hgnet_kernels.pphgnet_logits, (x, fused._network_id))
    torch.library.opcheck(torch.ops.hgnet_kernels.pphgnet_features, (x, fused._network_id))


def test_torch_compile_pipeline_without_graph_breaks(model):
    fused = hk.FusedPPHGNet(model, backend="torch")
    mean = torch.tensor([0.485, 0.456, 0.406], device=DEVICE).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=DEVICE).view(1, 3, 1, 1)

    def pipeline(images):
        return fused((images - mean) / std).softmax(-1)

    compiled = torch.compile(pipeline, fullgraph=True)  # fullgraph: any graph break is an error
    images = torch.rand(2, 3, 64, 64, device=DEVICE)
    torch.testing.assert_close(compiled(images), pipeline(images))
