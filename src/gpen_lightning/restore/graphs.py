"""CUDA-graph replay of a restoration network for a fixed batch: one launch per batch instead of
hundreds of small kernels, which is what bounds GPEN at batch 1 on a fast GPU."""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["GraphedNetwork"]


class GraphedNetwork:
    """Capture ``net`` (B, 3, S, S) -> (B, 3, S, S) once on a CUDA device and replay it.

    Args:
        net: the network (eval mode, no host syncs in its forward; GPEN qualifies).
        batch: the captured batch B; calls with fewer faces are padded (and cropped back).
        size: S.
        device: a CUDA device.
        bf16: capture under bfloat16 autocast.

    Call with (n <= B, 3, S, S) float on ``device``; returns float32 clamped to [-1, 1] (a copy,
    so the next replay does not overwrite it).
    """

    def __init__(
        self,
        net: Callable[[torch.Tensor], torch.Tensor],
        *,
        batch: int,
        size: int,
        device: torch.device | str,
        bf16: bool = False,
    ) -> None:
        device = torch.device(device)
        if device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device, got {device}; use cuda_graph=false")
        self.batch = batch
        self.static_in = torch.zeros(batch, 3, size, size, device=device)
        autocast = lambda: torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16)  # noqa: E731
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side), torch.inference_mode(), autocast():
            for _ in range(3):  # warm up (cuDNN autotuning, allocator) outside the capture
                net(self.static_in)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.inference_mode(), autocast():
            self.static_out = net(self.static_in).float().clamp(-1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n = len(x)
        if n > self.batch:
            raise ValueError(f"captured for {self.batch} faces, got {n}")
        with torch.inference_mode():
            self.static_in[:n].copy_(x)
            self.static_in[n:].zero_()
            self.graph.replay()
            return self.static_out[:n].clone()
