"""Each kernel family's capability table (``SUPPORTS``) is the one statement of what it runs: the
executor refuses exactly the plan ops the table leaves out, naming the op and what it lacks, and
the family's launchers refuse exactly the windows the table leaves out and compute the others."""
import pytest
import torch

import hgnet_kernels as hk
from hgnet_kernels import backends
from hgnet_kernels.kernels import spec
from hgnet_kernels.numerics import FP32_REL_TOL, relative_error
from hgnet_kernels.plan import Buffer, Op, Plan, Ref, stride_pair
from hgnet_kernels.shapes import model_plan

FAMILIES = ["torch", "triton", "cuda"]
COMPILED = ["triton", "cuda"]


def _op(kind, kernel=3, stride=1, padding=None, groups=1, c=16, relu=True, affine=False, residual=False):
    reads = (Ref("x", 0, c), Ref("r", 0, c)) if residual else (Ref("x", 0, c),)
    return Op(kind, "stages.0.blocks.0.layers.1", reads, (Ref("y", 0, c),), (), kernel, stride_pair(stride),
              padding if padding is not None else spec.symmetric(kernel), groups, relu, affine, residual)


# Both compiled families run the same forms today (tables of their own, free to diverge).
@pytest.mark.parametrize("name", COMPILED)
@pytest.mark.parametrize("op,refused", [
    (_op("conv", 2, 1, (0, 1, 0, 1), affine=True, residual=True), None),
    (_op("conv", 3, 2), None),
    (_op("depthwise", 5, 1, groups=16, affine=True), None),
    (_op("max_pool", 2, 1, (0, 1, 0, 1), relu=False), None),
    (_op("aggregation", 1, 1), None),
    (_op("ese_gate", relu=False), None),
    (_op("conv", 5, 1), "5×5 conv"),
    (_op("depthwise", 3, (2, 1), groups=16), None),  # PP-OCR's text-recognition downsample
    (_op("conv", 3, 3), "stride 3"),
    (_op("conv", 3, (2, 1)), "conv stride 2x1"),
    (_op("max_pool", 3, (1, 2), relu=False), "max_pool stride 1x2"),
    (_op("conv", 3, 1, groups=4), "4 groups"),
    (_op("conv", 3, 1, (3, 1, 1, 1)), "padding"),
    (_op("depthwise", 7, 1, groups=16), "7×7 depthwise"),
    (_op("depthwise", 3, 1, groups=16, residual=True), "depthwise with a residual"),
    (_op("depthwise", 3, 1, groups=8), "8 groups (only depthwise"),  # the CUDA family used to accept it
    (_op("aggregation", 1, 1, affine=True), "aggregation with the affine"),
    (_op("aggregation", 1, 1, relu=False), "aggregation without ReLU"),
    (_op("max_pool", 4, 2, relu=False), "4×4 max_pool"),
    (_op("max_pool", 3, 2, relu=True), "max_pool with ReLU"),
], ids=lambda v: v if isinstance(v, str) or v is None else v.describe())
def test_table_refuses_exactly_what_it_leaves_out(name, op, refused):
    reasons = spec.not_supported_reasons(op, backends.family(name).SUPPORTS)
    assert reasons == [] if refused is None else any(refused in r for r in reasons), reasons


def test_torch_family_runs_every_form():
    table = backends.family("torch").SUPPORTS
    assert spec.not_supported_reasons(_op("depthwise", 7, 3, groups=8, residual=True), table) == []
    assert spec.not_supported_reasons(_op("conv", 5, 3, (4, 0, 0, 4), groups=4), table) == []


def test_a_kind_missing_from_a_table_is_refused():
    assert spec.not_supported_reasons(_op("conv"), {}) == ["a conv op"]


@pytest.mark.parametrize("name", COMPILED)
def test_the_executor_refuses_up_front_naming_the_op(name):
    op = _op("depthwise", 3, 1, groups=8)
    plan = Plan("test", {"x": Buffer("x", 16), "y": Buffer("y", 16)}, (op,), "x", (), "y")
    with pytest.raises(hk.BackendUnavailable, match=r"cannot run stages\.0\.blocks\.0\.layers\.1: a grouped conv "
                                                      r"with 8 groups .*use backend='torch'"):
        backends.Backend(name, None, plan, torch.device("cpu"))  # refused before any weight is read


@pytest.mark.parametrize("name", COMPILED)
@pytest.mark.parametrize("model", ["tiny", "b0", "b4"])
def test_every_op_of_v1_and_v2_plans_is_claimed(name, model):
    plan = model_plan(model)
    table = backends.family(name).SUPPORTS
    assert [(op.name, spec.not_supported_reasons(op, table)) for op in plan.ops
            if spec.not_supported_reasons(op, table)] == []


# The windows tried at the launchers: every kernel and stride a table lists, and some none does.
KERNELS, STRIDES = (1, 2, 3, 4, 5), (1, 2, 3)


def _runs(supports: spec.Supports, kernel: int, stride: int) -> bool:
    return ((supports.kernels is None or kernel in supports.kernels)
            and (supports.strides is None or stride in supports.strides))


def _checked(run, reference, supports, kernel, stride):
    """A window outside the table is refused naming the kernel or stride it takes; one inside it is
    computed, against float64."""
    if not _runs(supports, kernel, stride):
        with pytest.raises(ValueError, match="kernel must be|stride must be"):
            run()
        return
    assert relative_error(run(), reference) <= FP32_REL_TOL


def _input(c, h=7, w=6):
    return torch.randn(2, c, h, w).contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("stride", STRIDES)
@pytest.mark.parametrize("kernel", KERNELS)
def test_conv_launcher_runs_exactly_its_table(name, kernel, stride):
    fam = backends.family(name)
    x, weight, bias = _input(4), torch.randn(5, 4, kernel, kernel), torch.randn(5)
    padding = (kernel - 1, 0, 0, kernel - 1)  # below k on every side: only the window is under test

    def run():
        return fam.conv_bn_act(x, fam.pack_conv_weight(weight), bias, stride, True, padding=padding)
    reference = spec.conv_bn_act_reference(x.double(), spec.pack_conv_weight(weight).double(), bias.double(), stride,
                                           True, padding)
    _checked(run, reference, fam.SUPPORTS["conv"], kernel, stride)


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("stride", STRIDES)
@pytest.mark.parametrize("kernel", KERNELS)
def test_depthwise_launcher_runs_exactly_its_table(name, kernel, stride):
    fam = backends.family(name)
    x, weight, bias = _input(8), torch.randn(8, 1, kernel, kernel), torch.randn(8)
    padding = spec.symmetric(kernel)

    def run():
        return fam.depthwise_conv(x, fam.pack_depthwise_weight(weight), bias, stride, padding=padding)
    reference = spec.depthwise_conv_reference(x.double(), spec.pack_depthwise_weight(weight).double(), bias.double(),
                                              stride, padding=padding)
    _checked(run, reference, fam.SUPPORTS["depthwise"], kernel, stride)


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("stride", STRIDES)
@pytest.mark.parametrize("kernel", KERNELS)
def test_max_pool_launcher_runs_exactly_its_table(name, kernel, stride):
    fam = backends.family(name)
    x, padding = _input(8), (0, kernel - 1, kernel - 1, 0)

    def run():
        return fam.max_pool(x, kernel=kernel, stride=stride, padding=padding)
    _checked(run, spec.max_pool_reference(x.double(), kernel, stride, padding), fam.SUPPORTS["max_pool"], kernel,
             stride)


@pytest.mark.parametrize("name", COMPILED)
def test_aggregation_launcher_refuses_a_window_outside_its_table(name):
    fam = backends.family(name)
    x, weight = _input(8), fam.pack_conv_weight(torch.randn(4, 8, 3, 3))
    with pytest.raises(ValueError, match="aggregation: kernel must be 1, got 3"):
        fam.aggregation_ese(x, weight, torch.randn(4))
