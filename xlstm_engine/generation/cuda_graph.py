"""The decode step captured as one CUDA graph: all blocks and the logits of one token per row, replayed per step.

At batch 1 a step of a large model is a few hundred small kernel launches, and the launches, not the GPU, set
the pace. A graph records them once and replays them with one call. It needs fixed addresses: the state (allocated
once, updated in place: the model contract's `inplace=True`), the input tokens and the output logits live in
tensors the graph owns, and the caller copies tokens in and reads logits out.
"""

import torch

from ..model.state import copy_state_
from .state import map_state


class StepGraph:
    """One captured decode step for a fixed batch: `logits = graph(tokens)`, tokens [B] int64 on the model's CUDA
    device, logits [B, V] float32 (the graph's own tensor: read it before the next call).

    `state` is the model state the step reads and writes in place (e.g. from `model.allocate_state`); it must
    stay alive and at its addresses while the graph is used. Capturing runs the step twice on a side stream to
    compile and warm up the kernels; the state is restored afterwards, so capture leaves it as it was.
    """

    def __init__(self, model, state, batch_size: int, device: torch.device):
        if torch.device(device).type != "cuda":
            raise ValueError(f"a CUDA graph needs a CUDA device, got {device}")
        self.model, self.state = model, state
        self.tokens = torch.zeros(batch_size, dtype=torch.long, device=device)
        saved = map_state(torch.clone, state)
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(2):  # Triton compiles and autotunes on first calls, which a capture cannot
                self._step()
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(self.graph):
            self.logits = self._step()
        with torch.inference_mode():
            copy_state_(state, saved)  # the warm-up steps advanced it; the capture itself ran nothing

    def _step(self) -> torch.Tensor:
        logits, _ = self.model.forward_with_state(self.tokens[:, None], self.state, logits_to_keep=1, inplace=True)
        return logits[:, -1].float()

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        self.tokens.copy_(tokens)
        self.graph.replay()
        return self.logits

