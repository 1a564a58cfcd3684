"""Feed-forward layers run over row blocks at inference: the same numbers, less memory, and on CPU faster.

A transformer feed-forward (``diffusers.models.attention.FeedForward``, GEGLU here) acts on each token
alone, so running it over blocks of rows gives the same result: bit for bit at full blocks; a short last
block's matrix product may round a last bit differently (1e-7 here). Parity with the official output is
checked by the parity tests and ``benchmarks/vs_official.py``. Its
hidden layer is 8x the width of its input: at the first UNet level of a 24-frame window with CFG that is
48 x 4096 x 2560 floats (2 GB) at SD-1.5 size, the largest tensor of the step. Blocks of about a thousand rows
keep that hidden layer in the CPU's caches: measured on a 2-core Xeon, 1.7x faster at SD-1.5 level-1 size
(320 wide, 16k rows), 1.5x at our benchmark's (64 wide, 12k rows); where the whole hidden layer is small
(under ``MIN_HIDDEN_BYTES``) one block is as fast, so such calls are left whole.

diffusers' own ``set_chunk_feed_forward`` splits one dimension into chunks that must divide it; this splits
the flattened rows into blocks of any count and writes them into one output.
"""

from __future__ import annotations

import contextlib
from typing import Iterable, Iterator

import torch
from diffusers.models.attention import FeedForward
from torch import nn

ROWS = 1024
MIN_HIDDEN_BYTES = 16 * 2**20


def _blocked_forward(ff: FeedForward, rows: int):
    whole = type(ff).forward.__get__(ff)
    last = [m for m in ff.net if isinstance(m, nn.Linear)][-1]
    inner, out_dim = last.in_features, last.out_features  # hidden width (GEGLU's projection is twice that)

    def forward(hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        flat = hidden_states.reshape(-1, hidden_states.shape[-1])
        hidden_bytes = flat.shape[0] * inner * 2 * hidden_states.element_size()
        if flat.shape[0] <= rows or hidden_bytes < MIN_HIDDEN_BYTES:
            return whole(hidden_states, *args, **kwargs)
        out = flat.new_empty(flat.shape[0], out_dim)
        for start in range(0, flat.shape[0], rows):
            out[start:start + rows] = whole(flat[start:start + rows], *args, **kwargs)
        return out.view(*hidden_states.shape[:-1], out_dim)

    return forward


@contextlib.contextmanager
def blocked_feed_forwards(models: Iterable[nn.Module], rows: int | None = ROWS) -> Iterator[int]:
    """Within the block, every ``FeedForward`` of ``models`` runs over ``rows``-row blocks (``None``: as
    built); restored on exit. Yields how many layers it changed."""
    layers = [m for model in models for m in model.modules() if isinstance(m, FeedForward)] if rows else []
    for ff in layers:
        ff.forward = _blocked_forward(ff, rows)
    try:
        yield len(layers)
    finally:
        for ff in layers:
            ff.__dict__.pop("forward", None)
