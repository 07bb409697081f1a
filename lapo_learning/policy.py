"""Inference API used by the policy node and by users: `load_policy(path).select_action(...)`."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from lapo_learning.agent import Agent
from lapo_learning.checkpoint import load_checkpoint, restore_agent
from lapo_learning.schema import DatasetStatistics, ObservationSchema, resize_image

log = logging.getLogger("lapo_learning.policy")


class GraphedAct:
    """`agent.act` for one observation, captured once as a CUDA graph and replayed per call.

    Eager inference of three image encoders dispatches hundreds of small kernels from Python, and on
    a GPU that dispatch, not the arithmetic, is the latency of a single observation; a replay
    launches them all at once. Inputs are copied into the graph's fixed tensors, so the weights and
    shapes must not change after capture (a loaded policy never trains).
    """

    def __init__(self, agent: Agent, schema: ObservationSchema) -> None:
        device = agent.device
        h, w = schema.image_size
        self.images = [torch.zeros(1, h, w, 3, dtype=torch.uint8, device=device) for _ in schema.cameras]
        self.joint = torch.zeros(1, schema.joint_dim, dtype=torch.float32, device=device)
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(3):  # outside the graph: cuDNN picks its kernels, the allocator settles
                agent.act(self.images, self.joint)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.action = agent.act(self.images, self.joint)

    def __call__(self, images: Sequence[torch.Tensor], joint: torch.Tensor) -> torch.Tensor:
        for static, image in zip(self.images, images):
            static.copy_(image)
        self.joint.copy_(joint)
        self.graph.replay()
        return self.action


class Policy:
    """Raw camera images + raw joints in, raw (unnormalised) joint commands out.

    Does exactly the preprocessing of training: `resize_image` to the schema's size, joint
    z-scoring with the training statistics, and un-normalises the action.
    """

    def __init__(self, agent: Agent, stats: DatasetStatistics, args: dict[str, Any], step: int,
                 cuda_graph: bool = True) -> None:
        self.agent = agent
        self.schema: ObservationSchema = agent.schema
        self.stats = stats
        self.args = args
        self.step = step
        self.device = agent.device
        # Captured at the first single-observation call on a GPU (see GraphedAct); stays None when eager.
        self._graphed: GraphedAct | None = None
        self._use_graph = cuda_graph and self.device.type == "cuda"

    def warm_up(self) -> None:
        """One call on blank inputs, so that lazy set-up (first-call allocations, on a GPU the CUDA
        graph capture) happens now rather than in a control loop's first tick."""
        blank = np.zeros((*self.schema.image_size, 3), dtype=np.uint8)
        self.select_action(blank, blank, blank, np.zeros(self.schema.joint_dim, dtype=np.float32))

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
            action = self._act(images, joint_t).cpu().numpy()
        return self.stats.actions_from_targets(action, joints)

    def _act(self, images: list[torch.Tensor], joint: torch.Tensor) -> torch.Tensor:
        if not self._use_graph or len(joint) != 1:
            return self.agent.act(images, joint)
        if self._graphed is None:
            try:
                self._graphed = GraphedAct(self.agent, self.schema)
            except RuntimeError as exc:  # e.g. an op that cannot be captured: stay correct, lose speed
                log.warning("CUDA graph capture failed (%s): running select_action eagerly", exc)
                self._use_graph = False
                return self.agent.act(images, joint)
        return self._graphed(images, joint)


def load_policy(path: str | Path, device: str = "cpu", cuda_graph: bool = True) -> Policy:
    """Load a checkpoint for inference; raises CheckpointError with the reason if it is not one.

    On a CUDA device, single observations run through a CUDA graph unless `cuda_graph` is False.
    """
    ckpt = load_checkpoint(path)
    agent, stats = restore_agent(ckpt, device, path)
    return Policy(agent, stats, json.loads(ckpt["args"]), int(ckpt["step"]), cuda_graph)
