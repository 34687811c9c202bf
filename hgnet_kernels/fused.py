"""``FusedPPHGNet``: an inference-only PP-HGNet with BN folded and fused kernels behind it."""
from __future__ import annotations

import logging
import time
from typing import Callable, Iterable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from . import library
from .backends import Backend, check_options, resolve_backend
from .export import StandardOpsNet, export_onnx, lab_scalars
from .folding import FoldedNet, fold_model
from .plan import Plan, build_plan
from .models import MIN_INPUT_SIZE, PPHGNet, PPHGNetV2

log = logging.getLogger(__name__)
_SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _as_pphgnet(model: nn.Module) -> Union[PPHGNet, PPHGNetV2]:
    """Ours as is; a timm ``hgnet_*`` (``features_only`` too), a transformers ``HGNetV2Backbone`` /
    ``HGNetV2ForImageClassification`` or an ultralytics RT-DETR converted exactly (or refused, naming
    what is unsupported), on the model's device and in its dtype."""
    if isinstance(model, (PPHGNet, PPHGNetV2)):
        return model
    from .interop import check_module, framework_of
    if framework_of(model) is None and not type(model).__module__.startswith("timm."):
        raise TypeError(f"FusedPPHGNet takes a hgnet_kernels PPHGNet / PPHGNetV2, a timm hgnet_* / hgnetv2_* "
                        f"(features_only too), a "
                        f"transformers HGNetV2Backbone / HGNetV2ForImageClassification or an ultralytics RT-DETR "
                        f"model, got {type(model).__name__}")
    from .weights import load_model  # converted without importing timm, transformers or ultralytics
    holder = check_module(model)
    if holder.training:
        raise ValueError("FusedPPHGNet folds BatchNorm running statistics, so the model must be in "
                         "eval mode; call model.eval() first")
    param = next(holder.parameters())
    return load_model(model).to(device=param.device, dtype=param.dtype)


def _own_out_indices(model: nn.Module) -> Tuple[int, ...]:
    """The stages ``model`` itself returns: a timm ``features_only`` list's ``out_indices``; all four
    for anything else."""
    if type(model).__name__ == "FeatureListNet" and type(model).__module__.startswith("timm."):
        from .weights import timm_feature_stages
        return timm_feature_stages(model)
    return (0, 1, 2, 3)


def _rebuild_backend_after_load(module: "FusedPPHGNet", _keys) -> None:
    """Backends cache derived weights (packed layouts, casts): rebuilt after a load. A module-level
    function, not a lambda, so that the module stays picklable."""
    module._build_backend()


class FusedPPHGNet(nn.Module):
    """Inference-only PP-HGNet: BN folded into the convs (in fp32), NHWC kernels behind one API.

    Args:
        model: an eval-mode ``hgnet_kernels.PPHGNet`` / ``PPHGNetV2``, a timm ``hgnet_*`` /
            ``hgnetv2_*`` model (any ``num_classes``, ``in_chans``, ``head_hidden_size`` and
            ``global_pool`` avg / max / avgmax; ``features_only=True`` too, whose stage maps
            ``forward_features`` returns as the timm module does), a transformers ``HGNetV2Backbone`` /
            ``HGNetV2ForImageClassification`` or an ultralytics RT-DETR (``RTDETR`` or its
            ``DetectionModel``; anything else is refused with a message naming it).
            It is read once; later changes to it do not affect this module, which lives on the
            model's device.
        backend: ``"torch"``, ``"triton"``, ``"cuda"`` or ``"auto"`` (the fastest that can run on
            the model's device: triton on CUDA, torch on the CPU).
        dtype: compute dtype (float32, float16 or bfloat16); default: the model's dtype, or
            float32 for a float64 model.
        out_indices: the stages ``forward_features`` returns (0–3: strides 4, 8, 16, 32; RT-DETR and
            D-FINE take (1, 2, 3)); default: a timm ``features_only`` module's own ``out_indices``,
            else all four. The plan runs only as far as they need.
        **options: options of the chosen backend (``cuda_graph`` — on by default on CUDA — and
            ``max_graphs`` for triton and cuda; ``tf32x3`` (fp32 on tensor cores as 3×TF32, off:
            unverified on a GPU) for both; ``allow_tf32`` for triton); others are a
            ``ValueError`` that lists the valid ones.

    ``forward(x)`` returns logits (or the pooled features of a model without a classifier) and
    ``forward_features(x)`` the stage maps of ``out_indices`` (NCHW shape in channels_last memory),
    both in the compute dtype. Inputs are NCHW floating-point tensors of any strides, at least
    32×32, on the module's device; they are cast to the compute dtype. No autograd graph is ever
    built: this module is for inference only.
    """

    def __init__(self, model: nn.Module, backend: str = "auto", dtype: Optional[torch.dtype] = None,
                 out_indices: Optional[Sequence[int]] = None, **options):
        super().__init__()
        if out_indices is None:
            out_indices = _own_out_indices(model)
        eager = _as_pphgnet(model)
        if eager.training:
            raise ValueError("FusedPPHGNet folds BatchNorm running statistics, so the model must be in "
                             "eval mode; call model.eval() first")
        weight = next(eager.parameters())
        if dtype is None:
            # float64 models compute in float32: no kernel here takes float64 (README: dtypes).
            dtype = torch.float32 if weight.dtype == torch.float64 else weight.dtype
        if dtype not in _SUPPORTED_DTYPES:
            raise ValueError(f"dtype must be one of {_SUPPORTED_DTYPES}, got {dtype}")
        out_indices = tuple(out_indices)
        if not out_indices or sorted(set(out_indices)) != list(out_indices) or not set(out_indices) <= {0, 1, 2, 3}:
            raise ValueError(f"out_indices must be increasing stage indices from 0, 1, 2, 3 (strides 4, 8, 16, 32), "
                             f"got {out_indices}")
        self.out_indices = out_indices
        self.dtype = dtype
        self.config = eager.config
        self.requested_backend = backend
        self.options = options
        self.net: FoldedNet = fold_model(eager, dtype).to(weight.device)
        self.plan: Plan = build_plan(self.net)
        self._backend: Optional[Backend] = None
        self._build_backend()
        self.register_load_state_dict_post_hook(_rebuild_backend_after_load)
        self._network_id = library.register(self)
        self.eval()  # inference only; exporters and wrappers read the mode

    def __getstate__(self):  # backends hold derived, device-specific state: rebuilt, not copied
        state = self.__dict__.copy()
        state["_backend"] = None
        return state

    def __setstate__(self, state):  # copies and unpickled modules get their own op registration
        super().__setstate__(state)
        self._network_id = library.register(self)
        self._build_backend()

    @property
    def in_channels(self) -> int:
        return self.plan.in_channels

    @property
    def num_outputs(self) -> int:
        """Width of ``forward``'s output: the classes, or the pooled features without an FC."""
        return self.plan.buffers[self.plan.output].channels

    @classmethod
    def from_checkpoint(cls, path, backend: str = "auto", dtype: Optional[torch.dtype] = None,
                        device: Optional[Union[str, torch.device]] = None, **options) -> "FusedPPHGNet":
        """Build the right-sized model from any checkpoint ``load_model`` reads (a file, or a transformers
        save_pretrained folder) and fuse it."""
        from .weights import load_model
        model = load_model(path)
        return cls(model.to(device) if device is not None else model, backend=backend, dtype=dtype, **options)

    @property
    def device(self) -> torch.device:
        return self.net.first_conv.weight.device

    @property
    def backend(self) -> str:
        return self._backend.name

    def _build_backend(self) -> None:
        name = resolve_backend(self.requested_backend, self.device, self.dtype)
        check_options(name, self.requested_backend, self.device, self.options)
        log.debug("FusedPPHGNet(%s): backend %r (asked %r) on %s, %s", self.config.name, name,
                  self.requested_backend, self.device, self.dtype)
        self._backend = Backend(name, self.net, self.plan, self.device, **self.options)
        self._lab_scalars = lab_scalars(self.net, self.plan)

    def _apply(self, fn, *args, **kwargs):
        # Every conversion (.to, .double, .half, .cuda, .cpu, .type, to_empty, …) comes through here:
        # where it lands is found on an empty probe first, so that a conversion that cannot be
        # served is refused before any weight changes.
        probe = fn(torch.empty(0, dtype=self.dtype, device=self.device))
        if probe.dtype not in _SUPPORTED_DTYPES:
            raise ValueError(f"FusedPPHGNet computes in {', '.join(map(str, _SUPPORTED_DTYPES))}; cannot convert it "
                             f"to {probe.dtype} (the model is unchanged)")
        name = resolve_backend(self.requested_backend, probe.device, probe.dtype)
        check_options(name, self.requested_backend, probe.device, self.options)
        super()._apply(fn, *args, **kwargs)
        self.dtype = probe.dtype
        self._build_backend()  # packed weights and kernels are per device and dtype
        return self

    def __prepare_scriptable__(self):  # torch.jit.script calls this first
        raise TypeError("torch.jit.script cannot compile FusedPPHGNet (its kernels are Python custom ops): use "
                        "fused.export_onnx(path) for a deployable graph, or torch.compile in PyTorch")

    def export_onnx(self, path, size: Tuple[int, int] = (224, 224), batch: int = 1, features: bool = False,
                    opset_version: int = 18) -> None:
        """Write the folded network to ``path`` as standard ONNX operators (ONNX Runtime, TensorRT):
        see ``hgnet_kernels.export.export_onnx``."""
        export_onnx(self, path, size=size, batch=batch, features=features, opset_version=opset_version)

    def extra_repr(self) -> str:
        return f"model={self.config.name}, backend={self.backend}, dtype={self.dtype}, device={self.device}"

    def check_input(self, x: torch.Tensor) -> torch.Tensor:
        """Validate an input batch and return it in the compute dtype (raises before any kernel)."""
        if not torch.is_tensor(x):
            raise TypeError(f"expected a torch.Tensor image batch, got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(f"expected an NCHW tensor of rank 4, got shape {tuple(x.shape)}"
                             + ("; add the batch dimension with x.unsqueeze(0)" if x.dim() == 3 else ""))
        if x.shape[1] != self.in_channels:
            hint = "; for NHWC data use x.permute(0, 3, 1, 2)" if x.shape[-1] == self.in_channels else ""
            raise ValueError(f"expected an NCHW tensor with {self.in_channels} channels, got {x.shape[1]} "
                             f"channels (shape {tuple(x.shape)}){hint}")
        if not x.is_floating_point():
            raise TypeError(f"expected a floating-point NCHW tensor, got {x.dtype}; call .float() "
                            "(and normalise the image) first")
        if x.device != self.device:
            raise ValueError(f"input is on {x.device} but the model is on {self.device}; "
                             f"call x.to('{self.device}')")
        if min(x.shape[2], x.shape[3]) < MIN_INPUT_SIZE:
            raise ValueError(f"PP-HGNet downsamples by 32: the input must be at least "
                             f"{MIN_INPUT_SIZE}×{MIN_INPUT_SIZE}, got {x.shape[2]}×{x.shape[3]}")
        return x.to(self.dtype)

    # The two methods hgnet_kernels.library's custom ops call (see there).
    def execute(self, x: torch.Tensor, features: bool) -> List[torch.Tensor]:
        """The stage maps of ``out_indices`` (``features``) or ``[head output]`` of a checked input."""
        with torch.no_grad():
            return self._backend.run(x, self.out_indices if features else (len(self.plan.features),))

    def output_specs(self, x: torch.Tensor, features: bool) -> List[Tuple[Tuple[int, ...], torch.dtype, torch.memory_format]]:
        n, _, h, w = x.shape
        if features:
            shapes = self.plan.feature_shapes(n, h, w)
            return [(shapes[i], self.dtype, torch.channels_last) for i in self.out_indices]
        return [((n, self.num_outputs), self.dtype, torch.contiguous_format)]

    def _standard_ops(self, x: torch.Tensor, features: bool):
        """The folded network in standard ops: what ``torch.onnx.export(fused, …)`` traces, since
        no ONNX runtime knows our custom ops."""
        return StandardOpsNet(self.net, self.plan, self.out_indices, features, self._lab_scalars)(x)

    # Both go through torch.library custom ops (hgnet_kernels.library), so torch.compile sees one
    # opaque op with known output shapes and never breaks its graph inside our kernels.
    def forward_features(self, x: torch.Tensor) -> List[torch.Tensor]:
        x = self.check_input(x).detach()
        if torch.onnx.is_in_onnx_export():
            return self._standard_ops(x, features=True)
        if x.shape[0] == 0:
            return [torch.empty(shape, dtype=dtype, device=self.device, memory_format=memory_format)
                    for shape, dtype, memory_format in self.output_specs(x, True)]
        return torch.ops.hgnet_kernels.pphgnet_features(x, self._network_id)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.check_input(x).detach()
        if torch.onnx.is_in_onnx_export():
            return self._standard_ops(x, features=False)
        if x.shape[0] == 0:
            return torch.empty(0, self.num_outputs, dtype=self.dtype, device=self.device)
        return torch.ops.hgnet_kernels.pphgnet_logits(x, self._network_id)

    def warmup(self, sizes: Iterable[Union[int, Tuple[int, int]]], batches: Iterable[int] = (1,), *,
               outputs: str = "logits",
               progress: Optional[Callable[[int, int, dict], None]] = None) -> List[dict]:
        """Compile every kernel (and, with CUDA graphs, capture the graph) of each input shape ahead
        of traffic, so that no request pays for it.

        Args:
            sizes: input sizes, ``224`` or ``(H, W)``; batches: batch sizes. Every (size, batch) pair
                is run once on a zero NCHW (contiguous) input: graphs are per shape and strides, so
                warm the layout you will feed.
            outputs: ``"logits"`` (what ``forward`` returns), ``"features"`` (``forward_features``)
                or ``"both"`` — each is its own graph.
            progress: called after each shape with (done, total, entry).

        Returns one entry per run, in the order they ran (largest inputs first): ``{"batch", "size",
        "outputs", "seconds"}``. Kernels compiled here
        land in Triton's cache (``TRITON_CACHE_DIR``, default ``~/.triton/cache``): bake it into a
        container image and a fresh process compiles nothing either. Raises ``ValueError`` before any
        work if CUDA graphs are on and the shapes need more than ``max_graphs`` of them.
        """
        kinds = {"logits": (False,), "features": (True,), "both": (False, True)}
        if outputs not in kinds:
            raise ValueError(f"outputs must be 'logits', 'features' or 'both', got {outputs!r}")
        shapes = []
        for size in sizes:
            h, w = (size, size) if isinstance(size, int) else tuple(size)
            if min(h, w) < MIN_INPUT_SIZE:
                raise ValueError(f"warmup size {h}×{w}: inputs must be at least {MIN_INPUT_SIZE}×{MIN_INPUT_SIZE}")
            shapes.extend((batch, h, w) for batch in batches)
        if any(batch < 1 for batch, _, _ in shapes):
            raise ValueError(f"warmup batches must be at least 1, got {sorted({b for b, _, _ in shapes})}")
        # Largest inputs first: the graphs share one memory pool, and a smaller shape's capture fits
        # in the blocks a larger one freed, whereas a larger one after it would need new ones.
        runs = sorted(((shape, features) for shape in dict.fromkeys(shapes) for features in kinds[outputs]),
                      key=lambda run: -run[0][0] * run[0][1] * run[0][2])
        backend = self._backend
        if backend.cuda_graph and len(runs) > backend.max_graphs:
            raise ValueError(f"warming {len(runs)} shapes × outputs needs {len(runs)} CUDA graphs, but max_graphs is "
                             f"{backend.max_graphs}: build FusedPPHGNet(..., max_graphs={len(runs)}) or warm fewer "
                             "shapes")
        done = []
        for index, ((batch, h, w), features) in enumerate(runs, 1):
            x = torch.zeros(batch, self.in_channels, h, w, device=self.device, dtype=self.dtype)
            start = time.perf_counter()
            (self.forward_features if features else self.forward)(x)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            entry = dict(batch=batch, size=(h, w), outputs="features" if features else "logits",
                         seconds=time.perf_counter() - start)
            log.info("warmup %d/%d: batch %d at %d×%d (%s) in %.2f s", index, len(runs), batch, h, w,
                     entry["outputs"], entry["seconds"])
            done.append(entry)
            if progress is not None:
                progress(index, len(runs), entry)
        return done
