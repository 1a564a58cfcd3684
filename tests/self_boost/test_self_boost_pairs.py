"""The reference choice on its own: never the clip's own source video, the same under any order of
the clips, changed by the seed, and the split rules of each reference pool."""

from __future__ import annotations

import random

import pytest

from anycharv.self_boost.pairs import CacheClip, choose_references, reference_frame


def _clips(sources: dict[str, tuple[str, int]]) -> list[CacheClip]:
    """``{digest: (split, clip count)}`` -> clips with ids that interleave the sources."""
    out = []
    for n, (digest, (split, count)) in enumerate(sorted(sources.items())):
        out += [CacheClip(f"c{(i * 7 + n) % 97:02d}{digest}", f"/videos/{digest}.mp4", digest, split,
                          "512x512" if i % 2 else "768x512") for i in range(count)]
    return out


SOURCES = {"a": ("train", 5), "b": ("train", 1), "c": ("train", 3), "d": ("val", 2), "e": ("val", 1)}


@pytest.mark.parametrize("mode", ["same_split_first", "same_split", "any_split"])
def test_references_come_from_another_source_and_do_not_depend_on_order(mode):
    clips = _clips(SOURCES)
    chosen = choose_references(clips, clips, seed=3, mode=mode)
    assert set(chosen) == {c.clip_id for c in clips}
    by_id = {c.clip_id: c for c in clips}
    for clip_id, ref in chosen.items():
        assert ref is not None and ref.source_digest != by_id[clip_id].source_digest
        if mode != "any_split":
            assert ref.split == by_id[clip_id].split
    shuffled = clips[:]
    random.Random(0).shuffle(shuffled)
    assert choose_references(shuffled, shuffled[::-1], seed=3, mode=mode) == chosen
    other_seeds = [choose_references(clips, clips, seed=s, mode=mode) for s in range(4, 8)]
    assert any(o != chosen for o in other_seeds)


def test_a_split_of_one_video_falls_back_to_the_other_split_unless_told_not_to():
    clips = _clips({"a": ("train", 3), "b": ("train", 2), "v": ("val", 2)})
    val = [c for c in clips if c.split == "val"]
    fallback = choose_references(val, clips, seed=0, mode="same_split_first")
    assert all(ref is not None and ref.split == "train" for ref in fallback.values())
    assert choose_references(val, clips, seed=0, mode="same_split") == {c.clip_id: None for c in val}
    alone = _clips({"a": ("train", 4)})
    assert set(choose_references(alone, alone, seed=0, mode="any_split").values()) == {None}


def test_every_other_source_clip_can_be_picked():
    clips = _clips({"a": ("train", 4), "b": ("train", 3), "c": ("train", 2)})
    target = next(c for c in clips if c.source_digest == "b")
    picked = {choose_references([target], clips, seed=s)[target.clip_id].clip_id for s in range(200)}
    assert picked == {c.clip_id for c in clips if c.source_digest != "b"}
    frames = {reference_frame(s, target.clip_id, 4) for s in range(100)}
    assert frames == {0, 1, 2, 3} and reference_frame(5, target.clip_id, 4) == reference_frame(5, target.clip_id, 4)
