"""Typed configs: pydantic models loaded from YAML and overridden with ``key.sub=value``.

The same pydantic models are the Prefect flow parameters, so the UI renders forms for them.
Every error names the file or key at fault.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from anycharv.errors import ConfigError

M = TypeVar("M", bound=BaseModel)

_WORD_BOOLEANS = {"on", "off", "yes", "no", "y", "n"}

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


class StrictModel(BaseModel):
    """Base for config models: unknown keys are errors (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file, a parse error or a non-mapping is a ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path}: not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path}: invalid YAML ({exc})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping, got {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into (["a","b","c"], value); the value is parsed as YAML (so 3, 0.5,
    true, [1,2], null work, and anything else stays a string). YAML 1.1's word booleans (on/off,
    yes/no) stay strings: ``filter.people_rule=off`` means the choice "off", and pydantic still reads
    them as booleans where a field is a bool."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key.sub=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: empty key")
    if raw.strip().lower() in _WORD_BOOLEANS:
        return key.split("."), raw.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def _known_fields(model_cls: type[BaseModel], parts: list[str], full_key: str) -> None:
    """Walk the model's fields along ``parts``; raise naming the first unknown key."""
    cls: Any = model_cls
    for depth, part in enumerate(parts):
        fields = getattr(cls, "model_fields", None)
        if fields is None:
            # A free-form dict (or other non-model) field: deeper keys are the user's.
            return
        if part not in fields:
            where = ".".join(parts[:depth]) or "top level"
            choices = ", ".join(sorted(fields))
            raise ConfigError(f"override {full_key!r}: unknown key {part!r} under {where} (known: {choices})")
        cls = fields[part].annotation
        sub = getattr(cls, "model_fields", None)
        if sub is None:
            # Optional[Model] / Model | None: look inside the union for a model class.
            for arg in getattr(cls, "__args__", ()) or ():
                if hasattr(arg, "model_fields"):
                    cls = arg
                    break


def apply_overrides(data: dict[str, Any], overrides: Iterable[str],
                    model_cls: type[BaseModel] | None = None) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``key.sub=value`` override applied."""
    out = _deep_copy(data)
    for text in overrides:
        parts, value = parse_override(text)
        if model_cls is not None:
            _known_fields(model_cls, parts, text)
        node = out
        for part in parts[:-1]:
            nxt = node.get(part)
            if not isinstance(nxt, dict):
                nxt = {}
                node[part] = nxt
            node = nxt
        node[parts[-1]] = value
    return out


def merge_into(base: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``given`` laid over it, mapping by mapping (``given`` wins; neither is changed)."""
    out = _deep_copy(base)
    for key, value in given.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_into(out[key], value)
        else:
            out[key] = _deep_copy(value)
    return out


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"invalid config ({source}):"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ())) or "(top level)"
        msg = err.get("msg", "invalid")
        given = err.get("input")
        detail = f" (got {given!r})" if given is not None and not isinstance(given, dict) else ""
        lines.append(f"  {loc}: {msg}{detail}")
    return "\n".join(lines)


def load_config(model_cls: type[M], path: str | Path | None = None, overrides: Iterable[str] = ()) -> M:
    """Build ``model_cls`` from an optional YAML file plus ``key.sub=value`` overrides."""
    overrides = list(overrides)
    data = read_yaml(path) if path is not None else {}
    data = apply_overrides(data, overrides, model_cls)
    source = str(path) if path is not None else "defaults"
    if overrides:
        source += " + overrides " + " ".join(overrides)
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from exc


def load_job_config(model_cls: type[M], default_name: str, path: str | Path | None, overrides: Iterable[str],
                    ray_address: str | None = None) -> M:
    """A job config (a model with a ``runtime`` section): ``path``, else ``configs/<default_name>``
    when it exists, plus overrides; ``ray_address`` (a CLI flag) wins over the file."""
    if path is None and (CONFIG_DIR / default_name).is_file():
        path = str(CONFIG_DIR / default_name)
    job = load_config(model_cls, path, overrides)
    if ray_address:
        job.runtime.ray_address = ray_address
    return job


def set_ray_address(job: BaseModel, address: str | None) -> BaseModel:
    """Point every ``ray_address`` field of a composite job (its sub-jobs' runtimes) at ``address``;
    None leaves the job as it is. Returns the job (changed in place)."""
    if not address:
        return job
    for name in type(job).model_fields:
        value = getattr(job, name)
        if name == "ray_address":
            setattr(job, name, address)
        elif isinstance(value, BaseModel):
            set_ray_address(value, address)
    return job


def dump_config(cfg: BaseModel, path: str | Path) -> None:
    """Write a config back to YAML (used to record what a run used next to its outputs)."""
    Path(path).write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))


def config_hash(cfg: BaseModel, *, exclude: set[str] | None = None) -> str:
    """Stable short hash of a config's content (part of content-derived keys)."""
    import hashlib
    import json

    payload = json.dumps(cfg.model_dump(mode="json", exclude=exclude), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
