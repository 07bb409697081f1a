"""Backbones chosen by name (as the seed's net_builder) and the multimodal observation encoder.

MLPs: `fc_2layers_{128,256,512,1024}units`, `fc_3layers_1024units`.
Image encoders: `cnn_3conv_1fc_0` (the Nature-DQN CNN, fast on CPU) and `resnet18` (torchvision).

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
IMAGE_ENCODERS = ("cnn_3conv_1fc_0", "resnet18")
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
        with torch.no_grad():
            flat = self.convs(torch.zeros(1, 3, *image_size)).shape[1]
        if flat == 0:
            raise ValueError(f"image_size {image_size} is too small for cnn_3conv_1fc_0 (min 36x36)")
        self.fc = nn.Sequential(nn.Linear(flat, out_dim), nn.ReLU())
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.convs(x))


def _group_norm(channels: int) -> nn.Module:
    return nn.GroupNorm(min(32, channels), channels)


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
    if name == "resnet18":
        return ResNet18Encoder(pretrained=pretrained)
    raise ValueError(f"unknown image encoder {name!r}; choose one of {list(IMAGE_ENCODERS)}")


def images_to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B,H,W,3] -> float [B,3,H,W] in [0,1]."""
    return images.permute(0, 3, 1, 2).float().div_(255.0)


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


def random_shift(images: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """DrQ-style augmentation: replicate-pad by `pad` pixels and crop back at a random offset.

    uint8 [B,H,W,3] in, uint8 [B,H,W,3] out; one offset per sample.
    """
    if pad <= 0:
        return images
    b, h, w, _ = images.shape
    padded = nn.functional.pad(images.permute(0, 3, 1, 2).float(), (pad, pad, pad, pad), mode="replicate")
    dx = torch.randint(0, 2 * pad + 1, (b,), device=images.device, generator=generator)
    dy = torch.randint(0, 2 * pad + 1, (b,), device=images.device, generator=generator)
    rows = (torch.arange(h, device=images.device).view(1, h) + dy.view(b, 1))  # [B,H]
    cols = (torch.arange(w, device=images.device).view(1, w) + dx.view(b, 1))  # [B,W]
    batch = torch.arange(b, device=images.device).view(b, 1, 1)
    out = padded.permute(0, 2, 3, 1)[batch, rows.view(b, h, 1), cols.view(b, 1, w)]
    return out.to(torch.uint8)

