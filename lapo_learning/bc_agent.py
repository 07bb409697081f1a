"""Behaviour-cloning baseline on the same observation encoder (`--algo bc`).

Regresses normalised actions with MSE. With no critic, the encoder is trained by the BC loss (it
sits in the one optimizer); compare with LAPO on the same data to see whether offline RL helps.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from lapo_learning.agent import Agent, AgentConfig, adam
from lapo_learning.networks import mlp
from lapo_learning.replay import Batch
from lapo_learning.schema import ObservationSchema


class BCAgent(Agent):
    def __init__(self, schema: ObservationSchema, config: AgentConfig, device: torch.device | str) -> None:
        super().__init__(schema, config, device)
        h = config.hidden_dim
        self.head = mlp(config.obs_feature_dim, (h, h, h), self.action_width).to(self.device)
        self.optimizer = adam(
            [{"params": self.head.parameters()}, {"params": self.encoder.parameters()}], lr=config.actor_lr)

    def modules(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "head": self.head}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"bc": self.optimizer}

    def train_step(self, batch: Batch) -> dict[str, float]:
        images = self.augment(batch.images)
        loss = F.mse_loss(self.head(self.encoder(images, batch.joint)), batch.action)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"bc_loss": loss.item()}

    @torch.no_grad()
    def act(self, images: list[torch.Tensor], joint: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.view(images), joint))
