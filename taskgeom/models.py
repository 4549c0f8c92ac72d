"""The paper's networks (Appendix A): WRN-16-4 (BatchNorm or LayerNorm), ResNet-18 with a CIFAR stem,
a small CNN for digits and CPU runs, and ``fast-resnet``, a small residual-free fast-training network in the
spirit of the fastest published CIFAR-10 recipes (a frozen patch-whitening stem, three residual blocks). Every model exposes ``features(x)`` (the penultimate layer phi
used for imprinting, eq. 7) and a bias-free linear ``head``; convolutions use Kaiming-normal init."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["WideResNet", "ResNet18", "ResNet50", "BlurPool", "SmallCNN", "FastResNet", "TimmNet", "build_model"]


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":  # LayerNorm over (C, H, W) of each sample, as GroupNorm with one group
        return nn.GroupNorm(1, channels)
    raise ValueError(f"norm must be 'batch' or 'layer', got {kind!r}")


def _init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) and m.weight is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class _Classifier(nn.Module):
    """Features phi (an ``nn.Sequential`` ending in a flat vector of ``feature_dim``) and a bias-free
    linear head; Kaiming-normal initialisation of every convolution and linear layer."""

    def _finish(self, layers: list, feature_dim: int, num_classes: int) -> None:
        self.features = nn.Sequential(*layers)
        self.feature_dim = feature_dim
        self.head = nn.Linear(feature_dim, num_classes, bias=False)
        _init(self)

    def forward(self, x):
        return self.head(self.features(x))


class _WideBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, norm: str):
        super().__init__()
        self.n1, self.c1 = _norm(norm, cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.n2, self.c2 = _norm(norm, cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.short = None if (cin == cout and stride == 1) else nn.Conv2d(cin, cout, 1, stride, 0, bias=False)

    def forward(self, x):
        o = torch.relu(self.n1(x))
        y = self.c1(o)
        y = self.c2(torch.relu(self.n2(y)))
        return y + (x if self.short is None else self.short(o))


class WideResNet(_Classifier):
    """WRN-depth-width (Zagoruyko & Komodakis), pre-activation, adaptive average pooling, bias-free head.
    WRN-16-4 has about 2.75M parameters; ``norm="layer"`` is the variant of Results 4 and 6."""

    def __init__(self, num_classes: int = 10, depth: int = 16, width: int = 4, norm: str = "batch"):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n + 4, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * width, 32 * width, 64 * width]
        layers = [nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)]
        cin = widths[0]
        for g, stride in zip(range(3), (1, 2, 2)):
            for b in range(n):
                layers.append(_WideBlock(cin, widths[g + 1], stride if b == 0 else 1, norm))
                cin = widths[g + 1]
        layers += [_norm(norm, cin), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self._finish(layers, cin, num_classes)


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, norm: str = "batch"):
        super().__init__()
        self.c1, self.n1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), _norm(norm, cout)
        self.c2, self.n2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), _norm(norm, cout)
        self.short = (
            nn.Sequential()
            if cin == cout and stride == 1
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), _norm(norm, cout))
        )

    def forward(self, x):
        y = torch.relu(self.n1(self.c1(x)))
        return torch.relu(self.n2(self.c2(y)) + self.short(x))


class ResNet18(_Classifier):
    """ResNet-18 with the CIFAR stem (3x3 convolution, no max-pool), for the contrastive methods;
    ``norm="layer"``: GroupNorm(1, C) (LayerNorm over each sample's channels and pixels) for BatchNorm."""

    def __init__(self, num_classes: int = 10, norm: str = "batch"):
        super().__init__()
        layers = [nn.Conv2d(3, 64, 3, 1, 1, bias=False), _norm(norm, 64), nn.ReLU()]
        cin = 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [_BasicBlock(cin, cout, stride, norm), _BasicBlock(cout, cout, 1, norm)]
            cin = cout
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self._finish(layers, 512, num_classes)


class BlurPool(nn.Module):
    """Anti-aliased downsampling (Zhang, 2019): a fixed depthwise [1, 2, 1] x [1, 2, 1] / 16 blur, then
    subsampling by ``stride``."""

    def __init__(self, channels: int, stride: int = 2):
        super().__init__()
        k = torch.tensor([1.0, 2.0, 1.0])
        k = (k[:, None] * k[None, :]) / 16.0
        self.register_buffer("kernel", k.expand(channels, 1, 3, 3).clone())
        self.stride, self.channels = stride, channels

    def forward(self, x):
        x = nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
        return nn.functional.conv2d(x, self.kernel, stride=self.stride, groups=self.channels)


class _Bottleneck(nn.Module):
    """ResNet-50 bottleneck; strided convolutions become stride-1 convolutions followed by BlurPool, and
    BatchNorm has no learned affine parameters (bias zero, scale one, Appendix A)."""

    def __init__(self, cin: int, mid: int, stride: int):
        super().__init__()
        cout = 4 * mid
        self.c1, self.n1 = nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid, affine=False)
        self.c2 = nn.Conv2d(mid, mid, 3, 1, 1, bias=False)
        self.blur = BlurPool(mid, stride) if stride > 1 else nn.Identity()
        self.n2 = nn.BatchNorm2d(mid, affine=False)
        self.c3, self.n3 = nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout, affine=False)
        self.short = (
            nn.Identity()
            if cin == cout and stride == 1
            else nn.Sequential(
                *([BlurPool(cin, stride)] if stride > 1 else []),
                nn.Conv2d(cin, cout, 1, bias=False),
                nn.BatchNorm2d(cout, affine=False),
            )
        )

    def forward(self, x):
        y = torch.relu(self.n1(self.c1(x)))
        y = torch.relu(self.n2(self.blur(self.c2(y))))
        return torch.relu(self.n3(self.c3(y)) + self.short(x))


class ResNet50(_Classifier):
    """ResNet-50 with BlurPool in place of the pooling and strided layers, for ImageNet (Appendix A)."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        layers = [
            nn.Conv2d(3, 64, 7, 1, 3, bias=False),
            BlurPool(64, 2),
            nn.BatchNorm2d(64, affine=False),
            nn.ReLU(),
            nn.MaxPool2d(3, 1, 1),
            BlurPool(64, 2),
        ]
        cin = 64
        for mid, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            for b in range(blocks):
                layers.append(_Bottleneck(cin, mid, stride if b == 0 else 1))
                cin = 4 * mid
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self._finish(layers, cin, num_classes)


class SmallCNN(_Classifier):
    """A small CNN for 8x8 digits and quick CPU runs (three conv layers, BatchNorm or LayerNorm)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 32, norm: str = "batch"):
        super().__init__()
        self._finish(
            [
                nn.Conv2d(in_channels, width, 3, 1, 1, bias=False),
                _norm(norm, width),
                nn.ReLU(),
                nn.Conv2d(width, 2 * width, 3, 2, 1, bias=False),
                _norm(norm, 2 * width),
                nn.ReLU(),
                nn.Conv2d(2 * width, 2 * width, 3, 1, 1, bias=False),
                _norm(norm, 2 * width),
                nn.ReLU(),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
            ],
            2 * width,
            num_classes,
        )


class _Scale(nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.factor = float(factor)

    def forward(self, x):
        return x * self.factor


class _FastBlock(nn.Module):
    """conv 3 x 3, max-pool 2, BatchNorm (or LayerNorm), GELU; then a residual branch conv 3 x 3, BatchNorm
    (or LayerNorm), GELU."""

    def __init__(self, cin: int, cout: int, norm: str = "batch"):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.pool, self.n1 = nn.MaxPool2d(2), _norm(norm, cout)
        self.res, self.n2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False), _norm(norm, cout)

    def forward(self, x):
        y = F.gelu(self.n1(self.pool(self.conv(x))))
        return y + F.gelu(self.n2(self.res(y)))


class FastResNet(_Classifier):
    """A fast-training residual CIFAR network: a 2 x 2 patch-whitening convolution (weights fitted to the
    training images by :meth:`fit_whitening` and frozen; positive and negative copies of each whitened
    direction, trainable bias), then three blocks (conv 3 x 3, max-pool, BatchNorm, GELU, and a residual
    conv 3 x 3, BatchNorm, GELU) of widths ``widths``, a global max-pool and a scale of 1/8 before the
    bias-free head. About 0.16 GMAC per 32 x 32 image; meant for many short runs (about ten epochs each,
    batches of 1,024). ``norm="layer"``: GroupNorm(1, C) (LayerNorm over each sample's channels and pixels)
    for every BatchNorm (Results 4 and 6 use LayerNorm, Appendix A)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, widths=(64, 256, 256), norm: str = "batch"):
        super().__init__()
        patch = in_channels * 4
        self.whiten = nn.Conv2d(in_channels, 2 * patch, 2, padding=0, bias=True)
        layers: list = [self.whiten, nn.GELU()]
        cin = 2 * patch
        for w in widths:
            layers.append(_FastBlock(cin, w, norm))
            cin = w
        layers += [nn.AdaptiveMaxPool2d(1), nn.Flatten(), _Scale(1 / 8)]
        self._finish(layers, cin, num_classes)
        self.whiten.weight.requires_grad_(False)
        self.fit_whitening(None)

    @torch.no_grad()
    def fit_whitening(self, images: torch.Tensor | None, eps: float = 5e-4) -> None:
        """Set the stem to whiten 2 x 2 patches of ``images`` ((n, C, H, W), normalised): rows are the
        eigenvectors of the patch covariance over ``sqrt(eigenvalue + eps)``, each with its negation.
        ``None``: the identity on patches (before any data is seen)."""
        w = self.whiten.weight
        patch = w.shape[1] * 4
        if images is None:
            basis = torch.eye(patch, device=w.device)
        else:
            x = images.float()
            p = x.unfold(2, 2, 1).unfold(3, 2, 1)  # (n, C, H-1, W-1, 2, 2)
            p = p.permute(0, 2, 3, 1, 4, 5).reshape(-1, patch).double()
            p = p - p.mean(0)
            cov = p.T @ p / max(1, p.shape[0] - 1)
            vals, vecs = torch.linalg.eigh(cov)
            basis = (vecs.T / torch.sqrt(vals.clamp_min(0) + eps)[:, None]).float().flip(0)
        basis = basis.reshape(patch, w.shape[1], 2, 2).to(w)
        w.copy_(torch.cat([basis, -basis]))
        self.whiten.bias.zero_()


class TimmNet(nn.Module):
    """Any timm architecture, randomly initialised (``pretrained=False``: nothing is downloaded), as one of
    taskgeom's networks: ``features(x)`` is timm's pooled pre-logits output (imprinted, eq. 7) and ``head`` a
    bias-free linear layer. ``norm="layer"`` is refused: the architecture brings its own normalisation."""

    def __init__(self, name: str, num_classes: int, in_channels: int = 3, norm: str = "batch"):
        super().__init__()
        try:
            import timm
        except ImportError as exc:
            raise ImportError("timm architectures need the 'timm' extra: pip install 'taskgeom[timm]'") from exc
        if norm != "batch":
            raise ValueError(f"timm:{name} brings its own normalisation layers; norm must be 'batch', got {norm!r}")
        if name not in timm.list_models():
            raise ValueError(f"unknown timm architecture {name!r} (timm.list_models() lists them)")
        self.body = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_channels)
        self.feature_dim = int(self.body.num_features)
        self.head = nn.Linear(self.feature_dim, num_classes, bias=False)

    def features(self, x):
        return self.body(x).flatten(1)

    def forward(self, x):
        return self.head(self.features(x))


def build_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    """``"wrn-16-4"``, ``"resnet18"``, ``"resnet50"`` (BlurPool), ``"small-cnn"``, ``"fast-resnet"``, or
    ``"timm:<name>"`` (:class:`TimmNet`); every one but resnet50 and timm's takes ``norm=`` "batch" |
    "layer" (LayerNorm as GroupNorm(1, C))."""
    if name.startswith("timm:"):
        return TimmNet(name[5:], num_classes, **kwargs)
    name = name.lower()
    if name.startswith("wrn-"):
        depth, width = (int(v) for v in name[4:].split("-"))
        return WideResNet(num_classes, depth, width, **kwargs)
    if name == "resnet18":
        return ResNet18(num_classes, **kwargs)
    if name == "resnet50":
        if kwargs.pop("norm", "batch") != "batch":
            raise ValueError("resnet50 has BatchNorm only (norm='batch')")
        return ResNet50(num_classes, **kwargs)
    if name == "small-cnn":
        return SmallCNN(num_classes, **kwargs)
    if name == "fast-resnet":
        return FastResNet(num_classes, **kwargs)
    raise ValueError(f"unknown architecture {name!r} (wrn-16-4, resnet18, resnet50, small-cnn, fast-resnet)")
