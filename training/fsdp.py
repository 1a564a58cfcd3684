"""FSDP (``runtime.strategy=fsdp``): the trained networks' parameters, gradients and optimizer state
sharded over the ranks (PyTorch's ``fully_shard``, one unit per UNet block and per network), for
networks whose optimizer state does not fit one GPU next to a replica. Frozen networks stay whole
on every rank (they have no gradients or optimizer state to shard).

Checkpoints keep the single-file format of DDP runs: every rank takes part in gathering the full
weights and optimizer state (collectives), rank 0 writes them, and on resume each rank reads the
full state and keeps its shard, so a run may change strategy between launches.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)

from anycharv.training.checkpoint import flatten_optimizer_state, unflatten_optimizer_state

FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def shard(networks: dict[str, nn.Module]) -> None:
    """Shard every network that trains something, block by block, in place.

    The ReferenceNet keeps its gathered weights from forward to backward: its gradients arrive
    through the reference tokens its blocks store, not through its output, so the hooks that would
    gather them again before backward never fire."""
    from torch.distributed.fsdp import fully_shard

    for name, net in networks.items():
        if not any(p.requires_grad for p in net.parameters()):
            continue
        keep = name == "reference_unet"
        for blocks in ("down_blocks", "up_blocks"):
            for block in getattr(net, blocks, None) or []:
                fully_shard(block, reshard_after_forward=not keep)
        fully_shard(net, reshard_after_forward=not keep)


def full_weights(model: nn.Module, names: tuple[str, ...]) -> dict[str, dict[str, torch.Tensor]]:
    """{network: full state dict on the CPU} (collective: every rank calls it; with the CPU offload only
    rank 0 receives the values)."""
    state = get_model_state_dict(model, options=FULL)
    out: dict[str, dict[str, torch.Tensor]] = {name: {} for name in names}
    for key, value in state.items():
        net, _, rest = key.partition(".")
        if net in out:
            out[net][rest] = value
    return out


def full_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer, param_names: list[str]
                   ) -> tuple[dict[str, torch.Tensor], dict]:
    """The optimizer state in the checkpoint's by-name format (collective; with the CPU offload only
    rank 0 receives it, the others get an empty one)."""
    state = get_optimizer_state_dict(model, optimizer, options=FULL)
    return flatten_optimizer_state(state.get("state", {}), state.get("param_groups", []), param_names)


def load_full_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer, param_names: list[str],
                        tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Put a by-name optimizer state into the sharded optimizer (each rank keeps its shard)."""
    groups = [{**g, "params": list(param_names)} for g in meta["param_groups"]]
    # not strict: parameters that never had a gradient (the ReferenceNet's last attentions, whose
    # output nothing reads) have no AdamW state, in this format as in torch's; the names were checked
    set_optimizer_state_dict(model, optimizer, {"state": unflatten_optimizer_state(tensors, meta),
                                                "param_groups": groups},
                             options=StateDictOptions(full_state_dict=True, strict=False))


def full_tensor(value: torch.Tensor) -> torch.Tensor:
    """A DTensor's full value (collective), a plain tensor as it is."""
    return value.full_tensor() if hasattr(value, "full_tensor") else value


def shard_like(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``value`` (full) laid out as the sharded parameter ``like``."""
    if not hasattr(like, "device_mesh"):
        return value.to(like.device)
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(value.to(like.device), like.device_mesh, like.placements)
