"""The assignment network's forward passes in a training step, replayed from CUDA graphs.

On a GPU the voc preset's step in bf16 spends longer on the host queueing kernels than the device
spends running them (docs/benchmarks.md): the assignment pass alone queues three ViT forwards,
about 55 ms of host time for 25 ms of device work. Its inputs keep their shapes from step to
step (the crop and the scales are fixed) and its weights change in place (the EMA), so each
forward is captured once per input shape, precision and device as a CUDA graph and replayed:
one launch instead of hundreds, and the same kernels, so the same numbers.

The outputs of a replay are the graph's own tensors, overwritten by the next replay of that
shape: the caller must use them before calling again with the same shape, as
``multiscale_assignments`` does. A network that cannot be captured (an operation that waits for
the host, say) runs as it is, after one warning.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from cosa.models.network import NetworkOutput

log = logging.getLogger(__name__)


class GraphedForward:
    """``network(images)`` without gradients, from a CUDA graph per input shape on a GPU."""

    def __init__(self, network: nn.Module) -> None:
        self.network = network
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor, NetworkOutput]] = {}
        self.capturable = True

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> NetworkOutput:
        if images.device.type != "cuda" or not self.capturable:
            return self.network(images)
        key = (
            tuple(images.shape),
            images.dtype,
            images.device,
            torch.is_autocast_enabled("cuda"),
            torch.get_autocast_dtype("cuda"),
        )
        if key not in self.graphs:
            try:
                self.graphs[key] = self._capture(images)
            except RuntimeError as error:
                self.capturable = False
                log.warning("the assignment network runs without CUDA graphs: its capture failed (%s)", error)
                return self.network(images)
        graph, static_input, static_output = self.graphs[key]
        static_input.copy_(images)
        graph.replay()
        return static_output

    def _capture(self, images: torch.Tensor) -> tuple[torch.cuda.CUDAGraph, torch.Tensor, NetworkOutput]:
        static_input = images.clone()
        with torch.cuda.device(images.device):
            # Warm-up away from the capture: lazy initialisation, library workspaces, kernel choices.
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):
                    self.network(static_input)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            # Thread-local: the data loader's pinning thread may call CUDA meanwhile.
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                static_output = self.network(static_input)
        return graph, static_input, static_output
