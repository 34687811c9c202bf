"""The D-FINE / DEIM / RT-DETRv2 torch ports' ``HGNetv2`` backbone, rebuilt for the tests from a
reading of their files (CI cannot reach GitHub): the same class names, attribute names (so the
same state-dict keys), ``return_idx`` and ``forward``, written here, not copied.

* D-FINE ``src/nn/backbone/hgnetv2.py`` (Peterande/D-FINE @ 0d00c521859adecb4adfe692952353f1284245a6;
  DEIM ships the same module): ``StemBlock.forward`` pads with ``F.pad(x, (0, 1, 0, 1))`` before
  stem2a, stem2b and the 2×2 / 1 ``ceil_mode`` max pool (zeros take part in the max); the HG
  block's aggregation is ``aggregation = Sequential(squeeze, excitation)``; ``freeze_norm``
  (default True) swaps every BatchNorm2d for a ``FrozenBatchNorm2d`` (buffers ``weight``, ``bias``,
  ``running_mean``, ``running_var`` and an ``eps``); unused activations / LABs are ``nn.Identity``.
* RT-DETRv2 ``rtdetrv2_pytorch/src/nn/backbone/hgnetv2.py`` (lyuwenyu/RT-DETR, read at its copy
  GomulkaK/RT-DETR @ 02507a53fe115378ca5def6af5657a9afc91b836): stem2a / stem2b are
  ``ConvBNAct(padding='same')`` = ``Sequential(ZeroPad2d([0, 1, 0, 1]), Conv2d)`` (keys
  ``stem.stem2a.conv.1.weight``), the pool ``Sequential(ZeroPad2d([0, 1, 0, 1]), MaxPool2d(2, 1,
  ceil_mode=True))``, the aggregation two attributes ``aggregation_squeeze_conv`` /
  ``aggregation_excitation_conv``; configs L / X / H (the widths of B4 / B5 / B6).

Both: ``forward`` runs the stem, then each stage, appending the stage's output when its index is
in ``return_idx`` (default [1, 2, 3]). Checked once by hand against the real modules (random
weights, BN statistics and LAB values, 64×96): D-FINE @ 4a1f73a (B0 with LAB, B4; frozen BNs) and
lyuwenyu/RT-DETR @ 068dfde (L, with and without frozen BNs) were recognised by ``accelerate`` and
their maps matched within 2.2e-6 relative.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

# in, mid, out, blocks, downsample, light block, kernel, layers: PP-HGNetV2 B0 and B4 (RT-DETRv2's "L")
STAGE_CONFIGS = {
    "B0": ([3, 16, 16], [[16, 16, 64, 1, False, False, 3, 3], [64, 32, 256, 1, True, False, 3, 3],
                         [256, 64, 512, 2, True, True, 5, 3], [512, 128, 1024, 1, True, True, 5, 3]]),
    "L": ([3, 32, 48], [[48, 48, 128, 1, False, False, 3, 6], [128, 96, 512, 1, True, False, 3, 6],
                        [512, 192, 1024, 3, True, True, 5, 6], [1024, 384, 2048, 1, True, True, 5, 6]]),
}


class FrozenBatchNorm2d(nn.Module):
    def __init__(self, num_features, eps=1e-5):
        super().__init__()
        for name, value in (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0), ("running_var", 1.0)):
            self.register_buffer(name, torch.full((num_features,), value))
        self.eps = eps

    def forward(self, x):
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale[None, :, None, None] + shift[None, :, None, None]


class LearnableAffineBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return self.scale * x + self.bias


class ConvBNAct(nn.Module):
    def __init__(self, in_chs, out_chs, kernel_size, stride=1, groups=1, padding="", use_act=True, use_lab=False):
        super().__init__()
        conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding=0 if padding == "same" else (kernel_size - 1) // 2,
                         groups=groups, bias=False)
        self.conv = nn.Sequential(nn.ZeroPad2d([0, 1, 0, 1]), conv) if padding == "same" else conv
        self.bn = nn.BatchNorm2d(out_chs)
        self.act = nn.ReLU() if use_act else nn.Identity()
        self.lab = LearnableAffineBlock() if use_act and use_lab else nn.Identity()

    def forward(self, x):
        return self.lab(self.act(self.bn(self.conv(x))))


class LightConvBNAct(nn.Module):
    def __init__(self, in_chs, out_chs, kernel_size, use_lab=False):
        super().__init__()
        self.conv1 = ConvBNAct(in_chs, out_chs, 1, use_act=False, use_lab=use_lab)
        self.conv2 = ConvBNAct(out_chs, out_chs, kernel_size, groups=out_chs, use_act=True, use_lab=use_lab)

    def forward(self, x):
        return self.conv2(self.conv1(x))


class StemBlock(nn.Module):
    def __init__(self, in_chs, mid_chs, out_chs, use_lab=False, port="dfine"):
        super().__init__()
        same = "same" if port == "rtdetrv2" else ""
        self.port = port
        self.stem1 = ConvBNAct(in_chs, mid_chs, 3, stride=2, use_lab=use_lab)
        self.stem2a = ConvBNAct(mid_chs, mid_chs // 2, 2, padding=same, use_lab=use_lab)
        self.stem2b = ConvBNAct(mid_chs // 2, mid_chs, 2, padding=same, use_lab=use_lab)
        self.stem3 = ConvBNAct(mid_chs * 2, mid_chs, 3, stride=2, use_lab=use_lab)
        self.stem4 = ConvBNAct(mid_chs, out_chs, 1, use_lab=use_lab)
        pool = nn.MaxPool2d(kernel_size=2, stride=1, ceil_mode=True)
        self.pool = nn.Sequential(nn.ZeroPad2d([0, 1, 0, 1]), pool) if port == "rtdetrv2" else pool

    def forward(self, x):
        x = self.stem1(x)
        if self.port == "rtdetrv2":  # the padding sits inside stem2a / stem2b / pool
            x2, x1 = self.stem2b(self.stem2a(x)), self.pool(x)
        else:
            x = F.pad(x, (0, 1, 0, 1))
            x2 = self.stem2b(F.pad(self.stem2a(x), (0, 1, 0, 1)))
            x1 = self.pool(x)
        return self.stem4(self.stem3(torch.cat([x1, x2], dim=1)))


class HG_Block(nn.Module):
    def __init__(self, in_chs, mid_chs, out_chs, layer_num, kernel_size, residual, light_block, use_lab, port):
        super().__init__()
        self.residual = residual
        self.layers = nn.ModuleList(
            LightConvBNAct(in_chs if i == 0 else mid_chs, mid_chs, kernel_size, use_lab=use_lab) if light_block
            else ConvBNAct(in_chs if i == 0 else mid_chs, mid_chs, kernel_size, use_lab=use_lab)
            for i in range(layer_num))
        total = in_chs + layer_num * mid_chs
        squeeze = ConvBNAct(total, out_chs // 2, 1, use_lab=use_lab)
        excitation = ConvBNAct(out_chs // 2, out_chs, 1, use_lab=use_lab)
        self.port = port
        if port == "rtdetrv2":
            self.aggregation_squeeze_conv, self.aggregation_excitation_conv = squeeze, excitation
        else:
            self.aggregation = nn.Sequential(squeeze, excitation)

    def forward(self, x):
        identity, output = x, [x]
        for layer in self.layers:
            x = layer(x)
            output.append(x)
        x = torch.cat(output, dim=1)
        if self.port == "rtdetrv2":
            x = self.aggregation_excitation_conv(self.aggregation_squeeze_conv(x))
        else:
            x = self.aggregation(x)
        return x + identity if self.residual else x


class HG_Stage(nn.Module):
    def __init__(self, in_chs, mid_chs, out_chs, block_num, layer_num, downsample, light_block, kernel_size, use_lab,
                 port):
        super().__init__()
        self.downsample = (ConvBNAct(in_chs, in_chs, 3, stride=2, groups=in_chs, use_act=False, use_lab=use_lab)
                           if downsample else nn.Identity())
        self.blocks = nn.Sequential(*(
            HG_Block(in_chs if i == 0 else out_chs, mid_chs, out_chs, layer_num, kernel_size, i > 0, light_block,
                     use_lab, port) for i in range(block_num)))

    def forward(self, x):
        return self.blocks(self.downsample(x))


class HGNetv2(nn.Module):
    def __init__(self, name, use_lab=False, return_idx=(1, 2, 3), freeze_norm=False, port="dfine"):
        super().__init__()
        self.use_lab, self.return_idx = use_lab, list(return_idx)
        stem, stages = STAGE_CONFIGS[name]
        self.stem = StemBlock(*stem, use_lab=use_lab, port=port)
        self.stages = nn.ModuleList(HG_Stage(i, m, o, b, n, d, light, k, use_lab, port)
                                    for i, m, o, b, d, light, k, n in stages)
        if freeze_norm:
            self._freeze_norm(self)

    def _freeze_norm(self, m):
        if isinstance(m, nn.BatchNorm2d):
            return FrozenBatchNorm2d(m.num_features)
        for name, child in m.named_children():
            frozen = self._freeze_norm(child)
            if frozen is not child:
                setattr(m, name, frozen)
        return m

    def forward(self, x):
        x = self.stem(x)
        outs = []
        for idx, stage in enumerate(self.stages):
            x = stage(x)
            if idx in self.return_idx:
                outs.append(x)
        return outs
