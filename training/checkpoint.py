"""Writing and reading a checkpoint folder (layout in ``run_layout``) without pickle: networks as
diffusers folders, optimizer tensors and RNG states as safetensors, everything else as JSON.

Optimizer state is stored by parameter *name* (``<network>.<parameter>``), not by position, so a
checkpoint loads into freshly built networks and a changed set of trained parameters is an error
that names them instead of a silent mix-up.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from anycharv.errors import InputError
from anycharv.training.run_layout import STATE, is_complete


def _file_sizes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != STATE}


def flatten_optimizer_state(by_name: dict[str, dict[str, Any]], param_groups: list[dict], names: list[str]
                            ) -> tuple[dict[str, torch.Tensor], dict]:
    """The checkpoint's format of an optimizer state given per parameter name: (tensors keyed
    "<param name>/<state key>", JSON part with the names, the groups' settings and the scalars)."""
    tensors, scalars = {}, {}
    for name, per_param in by_name.items():
        for key, value in per_param.items():
            if torch.is_tensor(value):
                tensors[f"{name}/{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{name}/{key}"] = value
    groups = [{k: v for k, v in g.items() if k != "params"} for g in param_groups]
    return tensors, {"param_names": names, "param_groups": groups, "scalars": scalars}


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict) -> dict[str, dict[str, Any]]:
    """``{param name: {state key: value}}`` back from the checkpoint's format."""
    by_name: dict[str, dict[str, Any]] = {}
    for key, value in list(tensors.items()) + list(meta["scalars"].items()):
        name, _, field = key.rpartition("/")
        by_name.setdefault(name, {})[field] = value
    return by_name


def optimizer_tensors(optimizer: torch.optim.Optimizer, names: list[str]) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer over the parameters ``names`` (in that order) in the checkpoint's format."""
    state = optimizer.state_dict()
    by_name = {names[int(index)]: per_param for index, per_param in state["state"].items()}
    return flatten_optimizer_state(by_name, state["param_groups"], names)


def check_optimizer_names(names: list[str], meta: dict, where: str) -> None:
    saved = meta["param_names"]
    if saved != names:
        extra, missing = sorted(set(saved) - set(names)), sorted(set(names) - set(saved))
        raise InputError(where, f"the checkpoint's optimizer trains other parameters (only in the checkpoint: "
                         f"{extra[:3]}, only in this run: {missing[:3]})", code="architecture_mismatch")


def load_optimizer(optimizer: torch.optim.Optimizer, names: list[str], tensors: dict[str, torch.Tensor],
                   meta: dict, where: str) -> None:
    check_optimizer_names(names, meta, where)
    per_param = {names.index(name): state for name, state in unflatten_optimizer_state(tensors, meta).items()}
    current = optimizer.state_dict()
    groups = [{**saved_group, "params": group["params"]}
              for saved_group, group in zip(meta["param_groups"], current["param_groups"])]
    optimizer.load_state_dict({"state": per_param, "param_groups": groups})


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            tensors[f"cuda{i}"] = torch.cuda.get_rng_state(i)
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return tensors, {"numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
                     "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]]}


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    for key, value in tensors.items():
        if key.startswith("cuda") and torch.cuda.is_available() and int(key[4:]) < torch.cuda.device_count():
            torch.cuda.set_rng_state(value, int(key[4:]))
    kind, keys, pos, has_gauss, gauss = meta["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = meta["python"]
    random.setstate((version, tuple(internal), gauss_next))


def save_network(net: nn.Module, weights: dict[str, torch.Tensor], folder: Path) -> None:
    """What ``save_pretrained`` writes (config.json + diffusion_pytorch_model.safetensors), from weights
    given apart from the module (gathered FSDP shards, EMA values)."""
    folder.mkdir(parents=True, exist_ok=True)
    net.save_config(str(folder))
    save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()},
              str(folder / "diffusion_pytorch_model.safetensors"))


def write_checkpoint(folder: Path, networks: dict[str, nn.Module], optimizer_state: tuple[dict, dict], state: dict,
                     ema: dict[str, dict[str, torch.Tensor]] | None = None,
                     weights: dict[str, dict[str, torch.Tensor]] | None = None) -> Path:
    """Write a complete checkpoint into the empty ``folder`` (``trainer/state.json`` last).
    ``weights``: the networks' full weights when the modules hold shards (FSDP)."""
    folder.mkdir(parents=True, exist_ok=True)
    full = weights or {name: net.state_dict() for name, net in networks.items()}
    for name, net in networks.items():
        save_network(net, full[name], folder / "model" / name)
    if ema:
        for name, net in networks.items():
            values = {k: v.detach().cpu().clone() for k, v in full[name].items()}
            values.update({k: v.cpu().to(values[k].dtype) for k, v in ema.get(name, {}).items()})
            save_network(net, values, folder / "ema" / name)
    trainer = folder / "trainer"
    trainer.mkdir(parents=True, exist_ok=True)
    tensors, optim_meta = optimizer_state
    save_file(tensors, str(trainer / "optimizer.safetensors"))
    rng_tensors, rng_meta = rng_state()
    save_file(rng_tensors, str(trainer / "rng.safetensors"))
    if ema:
        flat = {f"{net}/{k}": v.detach().cpu().contiguous() for net, params in ema.items() for k, v in params.items()}
        save_file(flat, str(trainer / "ema.safetensors"))
    record = {**state, "optimizer": optim_meta, "rng": rng_meta, "files": _file_sizes(folder)}
    tmp = trainer / f".{STATE}.tmp"
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
    os.replace(tmp, trainer / STATE)
    return folder


def read_checkpoint(folder: Path) -> dict:
    """The JSON state plus the optimizer, RNG and EMA tensors of a complete checkpoint."""
    if not is_complete(folder):
        raise InputError(str(folder), "incomplete checkpoint (files missing or cut short)", code="bad_checkpoint")
    state = json.loads((folder / "trainer" / STATE).read_text())
    state["optimizer_tensors"] = load_file(str(folder / "trainer" / "optimizer.safetensors"))
    state["rng_tensors"] = load_file(str(folder / "trainer" / "rng.safetensors"))
    ema_file = folder / "trainer" / "ema.safetensors"
    ema: dict[str, dict[str, torch.Tensor]] = {}
    if ema_file.is_file():
        for key, value in load_file(str(ema_file)).items():
            net, _, name = key.partition("/")
            ema.setdefault(net, {})[name] = value
    state["ema"] = ema
    return state


def load_networks_into(networks: dict[str, nn.Module], folder: Path) -> None:
    """Copy the checkpoint's weights into ``networks``; an architecture that differs is an error naming
    the network and the first differing keys."""
    for name, net in networks.items():
        saved = json.loads((folder / "model" / name / "config.json").read_text())
        ours = dict(net.config)
        differs = sorted(k for k in ours if not k.startswith("_") and k in saved
                         and json.dumps(saved[k]) != json.dumps(ours[k], default=list))
        if differs:
            raise InputError(str(folder), f"{name} has another architecture than this run's ({differs[:4]} differ: "
                             f"checkpoint {[saved[k] for k in differs[:2]]}, run {[ours[k] for k in differs[:2]]})",
                             code="architecture_mismatch")
        weights = load_file(str(folder / "model" / name / "diffusion_pytorch_model.safetensors"))
        own = net.state_dict()
        bad = sorted(set(own) ^ set(weights)) or sorted(k for k in own if own[k].shape != weights[k].shape)
        if bad:
            raise InputError(str(folder), f"{name}: weights do not fit this run's network ({bad[:3]})",
                             code="architecture_mismatch")
        net.load_state_dict(weights)


def prune(checkpoints: list[tuple[int, Path]], keep: int) -> None:
    for _, path in checkpoints[:-keep] if keep else checkpoints:
        shutil.rmtree(path, ignore_errors=True)
