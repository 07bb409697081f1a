"""Backbones chosen by name (as the seed's net_builder) and the multimodal observation encoder.

MLPs: `fc_2layers_{128,256,512,1024}units`, `fc_3layers_1024units`.
Image encoders: `cnn_3conv_1fc_0` (the Nature-DQN CNN, fast on CPU), `keypoints_3conv_16kp` (a small
GroupNorm CNN ending in a spatial softmax: 16 keypoints' x,y, as robomimic and Diffusion Policy
use) and `resnet18` (torchvision).

Normalisation layers: RL batches are small and correlated, and a policy runs one frame at a time, so
BatchNorm statistics would differ between training and deployment. `resnet18` therefore uses
GroupNorm when trained from scratch, and frozen BatchNorm (ImageNet statistics, never updated)
when started from pretrained weights. The same module is used in training and `select_action`;
there is no train/eval switch that changes its output.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

# name -> hidden widths (each followed by ReLU)
MLP_BACKBONES: dict[str, tuple[int, ...]] = {
    "fc_2layers_128units": (128, 64),
    "fc_2layers_256units": (256, 128),
    "fc_2layers_512units": (512, 256),
    "fc_2layers_1024units": (1024, 512),
    "fc_3layers_1024units": (1024, 1024, 512),
}
IMAGE_ENCODERS = ("cnn_3conv_1fc_0", "keypoints_3conv_16kp", "resnet18")
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int | None = None) -> nn.Sequential:
    """Linear+ReLU layers of widths `hidden`, then an optional linear output layer."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), nn.ReLU()]
        in_dim = width
    if out_dim is not None:
        layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


def build_mlp_backbone(name: str, in_dim: int) -> tuple[nn.Module, int]:
    """A named MLP backbone and its output width."""
    if name not in MLP_BACKBONES:
        raise ValueError(f"unknown MLP backbone {name!r}; choose one of {sorted(MLP_BACKBONES)}")
    hidden = MLP_BACKBONES[name]
    return mlp(in_dim, hidden), hidden[-1]


class NatureCNN(nn.Module):
    """`cnn_3conv_1fc_0`: Conv(32,8,4)-Conv(64,4,2)-Conv(64,3,1)-Linear(512), ReLU after each."""

    def __init__(self, image_size: tuple[int, int], out_dim: int = 512) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(3, 32, 8, stride=4), nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(),
            nn.Flatten(),
        )
        h, w = _conv_output_size(image_size, ((8, 4), (4, 2), (3, 1)))
        if min(h, w) < 1:
            raise ValueError(f"image_size {image_size} is too small for cnn_3conv_1fc_0 (min 36x36)")
        flat = 64 * h * w
        self.fc = nn.Sequential(nn.Linear(flat, out_dim), nn.ReLU())
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.convs(x))


def _conv_output_size(size: Sequence[int], layers: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """(H, W) after unpadded convolutions of the given (kernel, stride); <= 0 where one does not fit."""
    h, w = size
    for kernel, stride in layers:
        h, w = (h - kernel) // stride + 1, (w - kernel) // stride + 1
    return h, w


def _group_norm(channels: int) -> nn.Module:
    return nn.GroupNorm(min(32, channels), channels)


class SpatialSoftmax(nn.Module):
    """Feature maps [B,C,H,W] -> the expected image coordinates of K learned keypoints [B,2K].

    A 1x1 convolution makes one map per keypoint; a softmax over its pixels (with a learned
    temperature) is a distribution whose mean (x, y) in [-1, 1] is the keypoint (Levine et al.
    2016; robomimic's SpatialSoftmax). An object's position comes out as a number with sub-pixel
    precision instead of being spread over a flattened feature map.
    """

    def __init__(self, channels: int, keypoints: int) -> None:
        super().__init__()
        self.keypoints = nn.Conv2d(channels, keypoints, 1)
        self.log_temperature = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.keypoints(x)
        b, k, h, w = maps.shape
        attention = torch.softmax(maps.flatten(2) / self.log_temperature.exp(), dim=-1).view(b, k, h, w)
        ys = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=x.dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=x.device, dtype=x.dtype)
        return torch.cat([(attention.sum(2) * xs).sum(-1), (attention.sum(3) * ys).sum(-1)], dim=1)


class KeypointCNN(nn.Module):
    """`keypoints_3conv_16kp`: Conv(16,5,s2)-Conv(32,3,s2)-Conv(32,3), each GroupNorm+ReLU, then a
    16-keypoint SpatialSoftmax: 32 outputs. Narrow and strided to cost about twice the Nature CNN
    on the CPU; the softmax's expectation still places a keypoint between the map's cells."""

    LAYERS = ((16, 5, 2), (32, 3, 2), (32, 3, 1))  # (channels, kernel, stride)

    def __init__(self, image_size: tuple[int, int], keypoints: int = 16) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for channels, kernel, stride in self.LAYERS:
            layers += [nn.Conv2d(in_ch, channels, kernel, stride=stride), _group_norm(channels), nn.ReLU()]
            in_ch = channels
        self.convs = nn.Sequential(*layers)
        h, w = _conv_output_size(image_size, [(kernel, stride) for _, kernel, stride in self.LAYERS])
        if min(h, w) < 2:  # a 1x1 map has no position to find
            raise ValueError(f"image_size {image_size} is too small for keypoints_3conv_16kp (min 21x21)")
        self.softmax = SpatialSoftmax(in_ch, keypoints)
        self.out_dim = 2 * keypoints

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.softmax(self.convs(x))


class ResNet18Encoder(nn.Module):
    """torchvision ResNet18 trunk (512-d pooled output), GroupNorm or frozen BN (see module doc)."""

    def __init__(self, pretrained: bool = False) -> None:
        super().__init__()
        from torchvision.models import ResNet18_Weights, resnet18
        from torchvision.ops.misc import FrozenBatchNorm2d

        if pretrained:
            # Only works where the weights are already cached or downloadable: an opt-in for users.
            net = resnet18(weights=ResNet18_Weights.IMAGENET1K_V1, norm_layer=FrozenBatchNorm2d)
        else:
            net = resnet18(weights=None, norm_layer=_group_norm)
        net.fc = nn.Identity()
        self.net = net
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.out_dim = 512

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def build_image_encoder(name: str, image_size: tuple[int, int], pretrained: bool = False) -> nn.Module:
    if name == "cnn_3conv_1fc_0":
        if pretrained:
            raise ValueError("pretrained weights exist only for resnet18")
        return NatureCNN(image_size)
    if name == "keypoints_3conv_16kp":
        if pretrained:
            raise ValueError("pretrained weights exist only for resnet18")
        return KeypointCNN(image_size)
    if name == "resnet18":
        return ResNet18Encoder(pretrained=pretrained)
    raise ValueError(f"unknown image encoder {name!r}; choose one of {list(IMAGE_ENCODERS)}")


def images_to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B,H,W,3] -> float [B,3,H,W] in [0,1], contiguous in NCHW order.

    The permuted view alone is channels-last in memory, which the CPU convolutions carry on to
    their outputs, and GroupNorm's CPU kernel is ~10x slower on that layout (keypoint encoder,
    batch 64: forward + backward 1.4x the time of NCHW). Converting into an NCHW float buffer in one
    pass costs 0.27 ms for a 64x48x64 batch on one CPU thread, a uint8 transpose first 0.46 ms."""
    b, h, w, c = images.shape
    out = torch.empty((b, c, h, w), dtype=torch.float32, device=images.device)
    return out.copy_(images.permute(0, 3, 1, 2)).div_(255.0)  # one strided pass, not a uint8 copy first


class ObservationEncoder(nn.Module):
    """One image encoder per camera + a joint MLP, fused into one `feature_dim` vector.

    Input: `images` = list of uint8 [B,H,W,3] tensors in camera order, `joint` = normalised [B,J].
    """

    def __init__(
        self,
        n_cameras: int,
        joint_dim: int,
        image_size: tuple[int, int],
        feature_dim: int = 256,
        image_encoder: str = "cnn_3conv_1fc_0",
        joint_backbone: str = "fc_2layers_256units",
        pretrained: bool = False,
    ) -> None:
        super().__init__()
        self.image_encoders = nn.ModuleList(
            [build_image_encoder(image_encoder, image_size, pretrained) for _ in range(n_cameras)])
        self.joint_encoder, joint_out = build_mlp_backbone(joint_backbone, joint_dim)
        total = sum(e.out_dim for e in self.image_encoders) + joint_out
        # LayerNorm keeps the fused feature's scale stable while the critic reshapes the encoder.
        self.fusion = nn.Sequential(nn.Linear(total, feature_dim), nn.LayerNorm(feature_dim), nn.ReLU())
        self.feature_dim = feature_dim

    def forward(self, images: Sequence[torch.Tensor], joint: torch.Tensor) -> torch.Tensor:
        parts = [enc(images_to_float(img)) for enc, img in zip(self.image_encoders, images)]
        parts.append(self.joint_encoder(joint))
        return self.fusion(torch.cat(parts, dim=1))


def gather_windows(images: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Per sample b, the pixels images[b, rows[b, i], cols[b, j]]: uint8 [B,H,W,C] in, [B,h,w,C] out
    for rows [B,h] and cols [B,w].

    One index_select of whole pixels on a flat index: advanced indexing with three index tensors
    took 3x as long (2.2 against 0.75 ms for a 64x48x64 batch on one CPU thread), ~10% of a
    training step with three cameras' s and s'."""
    b, h, w, c = images.shape
    flat = (torch.arange(b, device=images.device).view(b, 1, 1) * h + rows.unsqueeze(2)) * w + cols.unsqueeze(1)
    return images.reshape(b * h * w, c).index_select(0, flat.view(-1)).view(b, rows.shape[1], cols.shape[1], c)


def random_shift(images: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """DrQ-style augmentation: replicate-pad by `pad` pixels and crop back at a random offset.

    uint8 [B,H,W,3] in, uint8 [B,H,W,3] out; one offset per sample. Replicate padding is an index
    clamped to the image, so one gather on the uint8 pixels does it (no padded float copy).
    """
    if pad <= 0:
        return images
    b, h, w, _ = images.shape
    dx = torch.randint(0, 2 * pad + 1, (b,), device=images.device, generator=generator)
    dy = torch.randint(0, 2 * pad + 1, (b,), device=images.device, generator=generator)
    rows = (torch.arange(h, device=images.device).view(1, h) + dy.view(b, 1) - pad).clamp_(0, h - 1)  # [B,H]
    cols = (torch.arange(w, device=images.device).view(1, w) + dx.view(b, 1) - pad).clamp_(0, w - 1)  # [B,W]
    return gather_windows(images, rows, cols)


def crop_size(image_size: Sequence[int], fraction: float) -> tuple[int, int]:
    """(H, W) of a crop keeping `fraction` of each side (at least one pixel)."""
    return max(1, round(image_size[0] * fraction)), max(1, round(image_size[1] * fraction))


def random_crop(images: torch.Tensor, size: tuple[int, int], generator: torch.Generator | None = None
                ) -> torch.Tensor:
    """robomimic-style augmentation: a `size` window of uint8 [B,H,W,3] at a random place per sample."""
    b, h, w, _ = images.shape
    ch, cw = size
    top = torch.randint(0, h - ch + 1, (b,), device=images.device, generator=generator)
    left = torch.randint(0, w - cw + 1, (b,), device=images.device, generator=generator)
    rows = torch.arange(ch, device=images.device).view(1, ch) + top.view(b, 1)
    cols = torch.arange(cw, device=images.device).view(1, cw) + left.view(b, 1)
    return gather_windows(images, rows, cols)


def center_crop(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The middle `size` window of uint8 [B,H,W,3]: what a randomly cropped model sees at inference."""
    h, w = images.shape[1:3]
    top, left = (h - size[0]) // 2, (w - size[1]) // 2
    return images[:, top:top + size[0], left:left + size[1]]

