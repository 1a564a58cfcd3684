"""Typed errors: every message names the offending input and the reason."""

from __future__ import annotations


class AnyCharVError(Exception):
    """Base class of every error this project raises on purpose."""


def own_error(exc: BaseException | None) -> AnyCharVError | None:
    """Our error inside whatever wrapped it (Ray tasks, Ray Data, Ray Train): followed through
    ``cause`` (Ray's task errors), ``__cause__``/``__context__``, ``worker_failures`` (Ray Train's
    per-rank errors) and exception arguments; None when there is none."""
    seen, todo = set(), [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, AnyCharVError):
            return current
        todo += [getattr(current, "cause", None), current.__cause__, current.__context__]
        failures = getattr(current, "worker_failures", None)
        if isinstance(failures, dict):
            todo += list(failures.values())
        todo += [a for a in getattr(current, "args", ()) if isinstance(a, BaseException)]
    return None


class ConfigError(AnyCharVError, ValueError):
    """A config file, key or value is wrong; the message names the key."""


class InputError(AnyCharVError, ValueError):
    """A user-supplied input (file, image, video, id) cannot be used.

    ``code`` is a short machine-readable reason (it is what manifests record).
    """

    def __init__(self, input_name: str, reason: str = "", code: str = "bad_input"):
        # One argument is a whole message: how torch's DataLoader re-raises a worker's error.
        self.input_name = str(input_name)
        self.reason = reason
        self.code = code
        super().__init__(f"{self.input_name}: {reason}" if reason else self.input_name)

    def __reduce__(self):
        # Rebuilt from its fields (not from the message alone), so it stays an InputError when it
        # crosses a process boundary (DataLoader workers, Ray).
        return type(self), (self.input_name, self.reason, self.code)


class AssetError(AnyCharVError, RuntimeError):
    """An offline asset is missing, corrupt, or cannot be fetched."""


class WeightsError(AnyCharVError, ValueError):
    """A checkpoint does not match the expected layout (missing/unexpected/mis-shaped keys)."""
