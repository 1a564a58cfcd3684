"""The YAML + key.sub=value config loader: values land, typos and bad values are named."""

from __future__ import annotations

import pytest
from pydantic import Field

from anycharv.config import StrictModel, apply_overrides, config_hash, load_config, parse_override
from anycharv.errors import ConfigError


class Decode(StrictModel):
    short_side: int = Field(512, gt=0)
    multiple: int = 64


class Job(StrictModel):
    name: str = "run"
    decode: Decode = Decode()
    tags: list[str] = []


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("name: from-yaml\ndecode:\n  short_side: 256\n")
    cfg = load_config(Job, path, ["decode.multiple=8", "tags=[a, b]"])
    assert cfg.name == "from-yaml"
    assert cfg.decode.short_side == 256
    assert cfg.decode.multiple == 8
    assert cfg.tags == ["a", "b"]


def test_override_values_are_typed():
    assert parse_override("a.b=3") == (["a", "b"], 3)
    assert parse_override("a=0.5") == (["a"], 0.5)
    assert parse_override("a=true") == (["a"], True)
    assert parse_override("a=hello world") == (["a"], "hello world")
    assert parse_override("rule=off") == (["rule"], "off")  # a choice, not YAML 1.1's False
    assert apply_overrides({"x": {"y": 1}}, ["x.z=2"]) == {"x": {"y": 1, "z": 2}}


def test_word_booleans_still_fill_bool_fields():
    class Flags(StrictModel):
        enabled: bool = True
        rule: str = "exactly_one"

    cfg = load_config(Flags, None, ["enabled=off", "rule=off"])
    assert cfg.enabled is False and cfg.rule == "off"


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"unknown key 'shortside' under decode.*short_side"):
        load_config(Job, None, ["decode.shortside=3"])


def test_bad_value_is_named():
    with pytest.raises(ConfigError, match=r"decode\.short_side.*greater than 0"):
        load_config(Job, None, ["decode.short_side=-1"])
    with pytest.raises(ConfigError, match=r"decode\.short_side"):
        load_config(Job, None, ["decode.short_side=big"])


def test_bad_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="missing.yaml: not found"):
        load_config(Job, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("decode: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: invalid YAML"):
        load_config(Job, bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(Job, listy)
    typo = tmp_path / "typo.yaml"
    typo.write_text("decod:\n  short_side: 3\n")
    with pytest.raises(ConfigError, match="decod"):
        load_config(Job, typo)


def test_malformed_override():
    with pytest.raises(ConfigError, match="expected key.sub=value"):
        load_config(Job, None, ["decode.short_side"])
    with pytest.raises(ConfigError, match="empty key"):
        load_config(Job, None, ["decode..x=1"])


def test_config_hash_tracks_content():
    a, b = Job(), Job(decode=Decode(short_side=256))
    assert config_hash(a) == config_hash(Job())
    assert config_hash(a) != config_hash(b)
