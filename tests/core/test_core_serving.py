"""The serving folder: promotion swaps one link atomically and keeps every promoted model."""

from __future__ import annotations

import json
import os

import pytest

from anycharv.errors import InputError
from anycharv.serving import ServingRoot


def _model(path, tag: str):
    path.mkdir(parents=True)
    (path / "model_index.json").write_text(json.dumps({"tag": tag}))
    (path / "weights.bin").write_bytes(tag.encode() * 100)
    return path


def test_promotion_points_the_link_at_a_complete_copy_and_keeps_the_previous(tmp_path):
    serving = ServingRoot.at(tmp_path / "root")
    assert serving.current() is None
    first = serving.promote(_model(tmp_path / "a", "a"), "r1", {"score": 1.0})
    assert serving.current() == first == serving.models / "r1"
    assert os.readlink(serving.link) == os.path.join("models", "r1")  # relative: the root can move
    second = serving.promote(_model(tmp_path / "b", "b"), "r2", {"score": 2.0})
    assert serving.current() == second
    assert json.loads((serving.link / "model_index.json").read_text()) == {"tag": "b"}
    assert (serving.models / "r1" / "weights.bin").read_bytes() == b"a" * 100  # the previous model is kept
    history = [json.loads(line) for line in serving.history.read_text().splitlines()]
    assert [(h["model_id"], h["score"]) for h in history] == [("r1", 1.0), ("r2", 2.0)]
    assert not [p for p in serving.root.rglob(".tmp-*")]  # no temporary name left behind


def test_bad_promotions_are_refused_and_change_nothing(tmp_path):
    serving = ServingRoot.at(tmp_path / "root")
    serving.promote(_model(tmp_path / "a", "a"), "r1")
    not_a_model = tmp_path / "empty"
    not_a_model.mkdir()
    with pytest.raises(InputError, match="no model_index.json"):
        serving.promote(not_a_model, "r2")
    with pytest.raises(InputError, match="exists already"):
        serving.promote(_model(tmp_path / "b", "b"), "r1")
    assert serving.current() == serving.models / "r1"
    assert json.loads((serving.link / "model_index.json").read_text()) == {"tag": "a"}


def test_a_serving_path_that_is_not_our_link_is_named(tmp_path):
    root = tmp_path / "root"
    (root / "serving").mkdir(parents=True)
    with pytest.raises(InputError, match="not the serving link"):
        ServingRoot.at(root).current()
