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
from lapo_learning.schema import DatasetStatistics, ObservationSchema
from lapo_learning.temporal_ensemble import TemporalEnsemble

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

    Does exactly the preprocessing of training: `ObservationSchema.preprocess` (crop, resize), joint
    z-scoring with the training statistics, and un-normalises the action. A policy trained with
    action chunks (`action_chunk` > 1) is stateful in `select_action`: it averages the overlapping
    chunks of successive calls (TemporalEnsemble), so call it once per control tick and `reset()`
    it when an episode starts or ticks were skipped.
    """

    def __init__(self, agent: Agent, stats: DatasetStatistics, args: dict[str, Any], step: int,
                 cuda_graph: bool = True, ensemble_decay: float = 0.01) -> None:
        self.agent = agent
        self.schema: ObservationSchema = agent.schema
        self.stats = stats
        self.args = args
        self.step = step
        self.device = agent.device
        self.chunk_size = agent.config.action_chunk
        self.ensemble = TemporalEnsemble(self.chunk_size, ensemble_decay) if self.chunk_size > 1 else None
        # Captured at the first single-observation call on a GPU (see GraphedAct); stays None when eager.
        self._graphed: GraphedAct | None = None
        self._use_graph = cuda_graph and self.device.type == "cuda"

    def reset(self) -> None:
        """Forget earlier calls' chunks: the next `select_action` starts a new trajectory."""
        if self.ensemble is not None:
            self.ensemble.reset()

    def warm_up(self) -> None:
        """One call on blank inputs, so that lazy set-up (first-call allocations, on a GPU the CUDA
        graph capture) happens now rather than in a control loop's first tick."""
        blank = np.zeros((*self.schema.image_size, 3), dtype=np.uint8)
        self.select_action(blank, blank, blank, np.zeros(self.schema.joint_dim, dtype=np.float32))
        self.reset()

    def select_action(self, left_img: np.ndarray, right_img: np.ndarray, global_img: np.ndarray,
                      joint: np.ndarray) -> np.ndarray:
        """One observation -> float32 action [A] for this tick (ensembled over chunks, see the class)."""
        chunk = self.predict_chunks([left_img], [right_img], [global_img], np.asarray(joint)[None])[0]
        return chunk[0] if self.ensemble is None else self.ensemble(chunk)

    def select_action_batch(self, left_imgs: Sequence[np.ndarray], right_imgs: Sequence[np.ndarray],
                            global_imgs: Sequence[np.ndarray], joints: np.ndarray) -> np.ndarray:
        """B observations -> float32 actions [B, A]: each chunk's first action (stateless)."""
        return self.predict_chunks(left_imgs, right_imgs, global_imgs, joints)[:, 0]

    def predict_chunks(self, left_imgs: Sequence[np.ndarray], right_imgs: Sequence[np.ndarray],
                       global_imgs: Sequence[np.ndarray], joints: np.ndarray) -> np.ndarray:
        """B observations -> float32 action chunks [B, K, A] (K = 1 without chunking), stateless."""
        images, joint_t = self.model_inputs(left_imgs, right_imgs, global_imgs, joints)
        with torch.inference_mode():
            targets = self._act(images, joint_t).cpu().numpy()
        return self.stats.chunks_from_targets(targets, np.asarray(joints, dtype=np.float32))

    def model_inputs(self, left_imgs: Sequence[np.ndarray], right_imgs: Sequence[np.ndarray],
                     global_imgs: Sequence[np.ndarray], joints: np.ndarray) -> tuple[list[torch.Tensor], torch.Tensor]:
        """B raw observations, checked -> the agent's inputs on its device: per camera uint8 [B,H,W,3]
        (cropped and resized as in training) and the normalised joints [B,J]."""
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
                arr = np.stack([self.schema.preprocess(cam, np.asarray(img)) for img in batch])
            except ValueError as exc:
                raise ValueError(f"{cam}: {exc}") from exc
            images.append(torch.from_numpy(arr).to(self.device))
        return images, torch.from_numpy(self.stats.joint.normalize(joints)).to(self.device)

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


def load_policy(path: str | Path, device: str = "cpu", cuda_graph: bool = True,
                ensemble_decay: float = 0.01) -> Policy:
    """Load a checkpoint for inference; raises CheckpointError with the reason if it is not one.

    On a CUDA device, single observations run through a CUDA graph unless `cuda_graph` is False.
    `ensemble_decay`: TemporalEnsemble's weight decay for checkpoints trained with action chunks
    (ACT's 0.01 by default; larger weighs the older predictions more, 0 averages them equally).
    """
    ckpt = load_checkpoint(path)
    agent, stats = restore_agent(ckpt, device, path, with_optimizers=False)
    return Policy(agent, stats, json.loads(ckpt["args"]), int(ckpt["step"]), cuda_graph, ensemble_decay)
