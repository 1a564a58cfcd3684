"""Which character re-dresses each clip: a clip of another source video, chosen by a hash.

Stage 2 learns to put the original character back into a generated clip; if the reference came from
the same video it would often be the same person, and the pair would teach nothing. So candidates
are the cache's clips whose ``source_digest`` differs from the clip's (never the same video), sorted
by clip id, and the pick is a hash of the seed and the clip id: the same cache and seed give the
same pairs on every machine and rerun, whatever the order the clips are processed in.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from dataclasses import dataclass
from typing import Iterable


@dataclass(frozen=True)
class CacheClip:
    """What the pairing needs of a cached clip (one row of the cache's index)."""

    clip_id: str
    source: str
    source_digest: str
    split: str
    bucket: str


def hash_index(count: int, *parts: object) -> int:
    """A number in ``[0, count)`` from the parts alone (stable across processes, unlike ``hash``)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") % count


class _Pool:
    """Clips sorted by id, with the positions of each source's clips, so the k-th clip of another
    source is found without building a candidate list per clip."""

    def __init__(self, clips: Iterable[CacheClip]):
        self.clips = sorted(clips, key=lambda c: c.clip_id)
        self.positions: dict[str, list[int]] = {}
        for i, clip in enumerate(self.clips):
            self.positions.setdefault(clip.source_digest, []).append(i)

    def others(self, digest: str) -> int:
        return len(self.clips) - len(self.positions.get(digest, ()))

    def other(self, digest: str, k: int) -> CacheClip:
        """The ``k``-th clip (by id) whose source is not ``digest``."""
        own = self.positions.get(digest, [])
        lo, hi = 0, len(self.clips) - 1
        while lo < hi:  # smallest i with i + 1 - (own clips <= i) > k
            mid = (lo + hi) // 2
            if mid + 1 - bisect_right(own, mid) > k:
                hi = mid
            else:
                lo = mid + 1
        return self.clips[lo]


def choose_references(targets: Iterable[CacheClip], pool: Iterable[CacheClip], seed: int,
                      mode: str = "same_split_first") -> dict[str, CacheClip | None]:
    """Clip id -> the clip whose character it is generated with (None: no clip of another source in
    reach). ``mode``: ``same_split`` picks within the target's split, ``any_split`` among all clips,
    ``same_split_first`` within the split when it has another source, else among all."""
    if mode not in ("same_split_first", "same_split", "any_split"):
        raise ValueError(f"reference pool {mode!r}: expected same_split_first, same_split or any_split")
    pool = list(pool)
    everything = _Pool(pool)
    by_split = {split: _Pool(c for c in pool if c.split == split) for split in {c.split for c in pool}}
    out: dict[str, CacheClip | None] = {}
    for clip in targets:
        if mode == "any_split":
            reach = everything
        else:
            reach = by_split.get(clip.split) or _Pool(())
            if mode == "same_split_first" and reach.others(clip.source_digest) == 0:
                reach = everything
        count = reach.others(clip.source_digest)
        out[clip.clip_id] = (reach.other(clip.source_digest, hash_index(count, seed, "reference", clip.clip_id))
                             if count else None)
    return out


def reference_frame(seed: int, clip_id: str, count: int) -> int:
    """Which of the reference clip's ``count`` cached reference frames to use."""
    return hash_index(count, seed, "frame", clip_id)
