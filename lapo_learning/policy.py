"""Inference API used by the policy node and by users: `load_policy(path).select_action(...)`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from lapo_learning.agent import Agent
from lapo_learning.checkpoint import load_checkpoint, restore_agent
from lapo_learning.schema import DatasetStatistics, ObservationSchema, resize_image


class Policy:
    """Raw camera images + raw joints in, raw (unnormalised) joint commands out.

    Does exactly the preprocessing of training: `resize_image` to the schema's size, joint
    z-scoring with the training statistics, and un-normalises the action.
    """

    def __init__(self, agent: Agent, stats: DatasetStatistics, args: dict[str, Any], step: int) -> None:
        self.agent = agent
        self.schema: ObservationSchema = agent.schema
        self.stats = stats
        self.args = args
        self.step = step
        self.device = agent.device

    def select_action(self, left_img: np.ndarray, right_img: np.ndarray, global_img: np.ndarray,
                      joint: np.ndarray) -> np.ndarray:
        """One observation -> float32 action [A]."""
        return self.select_action_batch([left_img], [right_img], [global_img], np.asarray(joint)[None])[0]

    def select_action_batch(self, left_imgs: Sequence[np.ndarray], right_imgs: Sequence[np.ndarray],
                            global_imgs: Sequence[np.ndarray], joints: np.ndarray) -> np.ndarray:
        """B observations -> float32 actions [B, A]."""
        joints = np.asarray(joints, dtype=np.float32)
        if joints.ndim != 2 or joints.shape[1] != self.schema.joint_dim:
            raise ValueError(f"joint: expected shape [B, {self.schema.joint_dim}], got {joints.shape}")
        if not np.isfinite(joints).all():
            raise ValueError("joint: contains NaN/inf")
        images = []
        for cam, batch in zip(self.schema.cameras, (left_imgs, right_imgs, global_imgs)):
            if len(batch) != len(joints):
                raise ValueError(f"{cam}: {len(batch)} images for {len(joints)} joint vectors")
            try:
                arr = np.stack([resize_image(np.asarray(img), self.schema.image_size) for img in batch])
            except ValueError as exc:
                raise ValueError(f"{cam}: {exc}") from exc
            images.append(torch.from_numpy(arr).to(self.device))
        joint_t = torch.from_numpy(self.stats.joint.normalize(joints)).to(self.device)
        with torch.inference_mode():
            action = self.agent.act(images, joint_t).cpu().numpy()
        return self.stats.actions_from_targets(action, joints)


def load_policy(path: str | Path, device: str = "cpu") -> Policy:
    """Load a checkpoint for inference; raises CheckpointError with the reason if it is not one."""
    ckpt = load_checkpoint(path)
    agent, stats = restore_agent(ckpt, device, path)
    return Policy(agent, stats, json.loads(ckpt["args"]), int(ckpt["step"]))
