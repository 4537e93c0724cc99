"""Processes and devices: one process, or several under torchrun with DDP or FSDP2 (`fully_shard`).

Applied from outside the model, in this order: activation checkpointing on every block, then DDP or FSDP2
(each block sharded, then the root). Gradient reductions average over processes.
"""

import functools
import os
import warnings
from contextlib import contextmanager, nullcontext

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict
from torch.utils.checkpoint import checkpoint


def apply_activation_checkpointing(model: nn.Module) -> None:
    """Recompute every block's activations in the backward pass (the parameter names stay the same)."""
    for block in model.residual_blocks():
        block.forward = functools.partial(checkpoint, block.forward, use_reentrant=False)


class Distributed:
    def __init__(self, rank: int, world_size: int, device: torch.device, owns_group: bool):
        self.rank, self.world_size, self.device, self.owns_group = rank, world_size, device, owns_group
        self.is_main = rank == 0
        self.mode = None

    @classmethod
    def from_environment(cls, device: str = "auto") -> "Distributed":
        """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK; start the process group (NCCL on GPUs, else gloo)."""
        world_size = int(os.environ.get("WORLD_SIZE", 1))
        rank, local_rank = int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
        if device.startswith("cuda") and not torch.cuda.is_available():
            warnings.warn(f"training.device={device!r} but no GPU is available: training on the CPU", stacklevel=2)
            device = "cpu"
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        resolved = torch.device(device)
        if resolved.type == "cuda" and resolved.index is None:
            resolved = torch.device("cuda", local_rank)
            torch.cuda.set_device(resolved)
        owns = world_size > 1 and not dist.is_initialized()
        if owns:
            dist.init_process_group("nccl" if resolved.type == "cuda" else "gloo")
        return cls(rank, world_size, resolved, owns)

    def wrap(self, model: nn.Module, training) -> nn.Module:
        if training.activation_checkpointing:
            apply_activation_checkpointing(model)
        if self.world_size == 1:
            return model
        self.mode = training.distributed
        if self.mode == "fsdp":
            from torch.distributed.fsdp import fully_shard

            for block in model.residual_blocks():
                fully_shard(block)
            fully_shard(model)
            return model
        return nn.parallel.DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda"
                                                   else None)

    def all_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world_size > 1:
            dist.all_reduce(tensor)
        return tensor

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    @contextmanager
    def no_sync(self, model: nn.Module, enabled: bool):
        """Skip the gradient reduction (for all but the last accumulation step)."""
        if not enabled or self.world_size == 1:
            yield
        elif self.mode == "fsdp":
            model.set_requires_gradient_sync(False)
            try:
                yield
            finally:
                model.set_requires_gradient_sync(True)
        else:
            with model.no_sync() if enabled else nullcontext():
                yield

    def clip_grad_norm(self, model: nn.Module, max_norm: float | None) -> float:
        """Clip to max_norm (None: only measure). Returns the global gradient norm before clipping."""
        norm = nn.utils.clip_grad_norm_(model.parameters(), max_norm if max_norm is not None else float("inf"))
        return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)

    def full_state_dicts(self, model: nn.Module, optimizer) -> tuple[dict, dict]:
        """Unsharded model and optimizer state, keyed by parameter name (the same for 1 or N processes)."""
        return get_state_dict(model, optimizer, options=self._options())

    def load_full_state_dicts(self, model: nn.Module, optimizer, model_state: dict, optimizer_state: dict) -> None:
        set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=optimizer_state,
                       options=self._options())

    def _options(self) -> StateDictOptions:
        return StateDictOptions(full_state_dict=True, cpu_offload=self.world_size > 1)

    def close(self) -> None:
        if self.owns_group:
            dist.barrier()  # no process tears its connections down while another still uses them
            dist.destroy_process_group()
