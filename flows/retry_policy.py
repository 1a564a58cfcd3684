"""When a Prefect task retries: on transient failures only. A config, input or setup error (any
``AnyCharVError``) would fail the same way again, so it fails the run at once with its message."""

from __future__ import annotations

from anycharv.errors import AnyCharVError


def retry_unless_user_error(task, task_run, state) -> bool:
    try:
        state.result()
    except AnyCharVError:
        return False
    except Exception:
        return True
    return False
