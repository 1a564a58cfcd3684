"""One training forward pass: ReferenceNet on the reference latent, pose guider, denoising UNet on
``[x_t | condition latent | mask]``, v-prediction loss. The three networks sit in one module so DDP
(or FSDP) wraps them together.

Batches of every stage are brought to one layout first (``StageBatch``): the image stage's single
frame becomes a 1-frame video, the denoising UNet always sees ``(B, 9, F, h, w)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from anycharv.model.reference_attention import ReferenceAttentionControl
from anycharv.training.objective import Draws, Objective


@dataclass
class StageBatch:
    target: torch.Tensor  # (B,4,F,h,w) clean latents: what the model learns to produce
    condition: torch.Tensor  # (B,4,F,h,w) channels 4-7: masked frames (stage 1) / generated clip (stage 2)
    mask: torch.Tensor  # (B,1,F,h,w) 1 on the character
    pose: torch.Tensor  # (B,3,F,H,W) in [0,1]
    ref_latent: torch.Tensor  # (B,4,h,w)
    ref_clip: torch.Tensor  # (B,1,D)
    seeds: list[int]

    def to(self, device: torch.device) -> "StageBatch":
        moved = {k: getattr(self, k).to(device, non_blocking=True) for k in
                 ("target", "condition", "mask", "pose", "ref_latent", "ref_clip")}
        return StageBatch(seeds=self.seeds, **moved)


def stage_batch(batch: dict, stage: str) -> StageBatch:
    """A collated dataset batch in the common layout."""
    seeds = [int(s) for s in batch["sample_seed"]]
    if stage == "stage1_image":
        return StageBatch(target=batch["latent"][:, :, None], condition=batch["masked_latent"][:, :, None],
                          mask=batch["mask"][:, :, None], pose=batch["pose"][:, :, None],
                          ref_latent=batch["ref_latent"], ref_clip=batch["ref_clip"], seeds=seeds)
    condition = batch["input_latents"] if stage == "stage2" else batch["masked_latents"]
    return StageBatch(target=batch["latents"], condition=condition, mask=batch["masks"], pose=batch["poses"],
                      ref_latent=batch["ref_latent"], ref_clip=batch["ref_clip"], seeds=seeds)


class TrainingNetwork(nn.Module):
    """The networks plus the reference-attention wiring between them; ``forward`` returns the loss."""

    def __init__(self, nets: dict[str, nn.Module], objective: Objective):
        super().__init__()
        self.reference_unet = nets["reference_unet"]
        self.denoising_unet = nets["denoising_unet"]
        self.pose_guider = nets["pose_guider"]
        self.objective = objective
        self.control: ReferenceAttentionControl | None = None
        self.attach_control()

    def attach_control(self) -> None:
        """Install the reference attention for training: the bank keeps its autograd history
        (``bank_dtype=None``), so the ReferenceNet learns through it."""
        if self.control is None:
            self.control = ReferenceAttentionControl(self.reference_unet, self.denoising_unet, False,
                                                     bank_dtype=None)

    def detach_control(self) -> None:
        """Restore the plain attention processors (before saving, or validating with a pipeline that
        installs its own)."""
        if self.control is not None:
            self.control.remove()
            self.control = None

    @staticmethod
    def _trains(module: nn.Module) -> bool:
        return any(p.requires_grad for p in module.parameters())

    def forward(self, batch: StageBatch, draws: Draws) -> torch.Tensor:
        keep = (~draws.drop).to(batch.ref_clip.dtype)[:, None, None]
        context = batch.ref_clip * keep
        self.control.state.drop_reference = draws.drop
        self.control.clear()
        with torch.set_grad_enabled(torch.is_grad_enabled() and self._trains(self.reference_unet)):
            zeros = torch.zeros(batch.ref_latent.shape[0], device=batch.ref_latent.device, dtype=torch.long)
            self.reference_unet(batch.ref_latent, zeros, encoder_hidden_states=context)
        self.control.update()
        with torch.set_grad_enabled(torch.is_grad_enabled() and self._trains(self.pose_guider)):
            pose = self.pose_guider(batch.pose)
        noisy, target = self.objective.noisy_and_target(batch.target, draws)
        sample = torch.cat([noisy, batch.condition, batch.mask], dim=1)
        prediction = self.denoising_unet(sample, draws.timesteps, encoder_hidden_states=context, pose_cond_fea=pose)
        # the banks and the dropout flags stay until the next step: gradient checkpointing reads them
        # again in backward
        return self.objective.loss(prediction, target, draws.timesteps)

    def networks(self) -> dict[str, nn.Module]:
        return {"reference_unet": self.reference_unet, "denoising_unet": self.denoising_unet,
                "pose_guider": self.pose_guider}
