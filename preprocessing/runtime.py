"""How a preprocessing job runs (Ray address, workers, batching, resume), kept apart from what it
computes (``PreprocessConfig``) so that runtime knobs never change clip ids (nor do the execution
fields of the sections, see ``keys.py``).

``PreprocessJob`` is the one typed parameter of the Prefect flow and of the CLI: YAML files and
overrides like ``detect.conf=0.3`` and ``runtime.ray_address=auto`` address the same model.
"""

from __future__ import annotations

from pydantic import Field

from anycharv.executor.config import ExecutorConfig
from anycharv.preprocessing.config import PreprocessConfig
from anycharv.preprocessing.keys import content_hash

DEVICE_SECTIONS = ("detect", "mask", "pose")


class RuntimeConfig(ExecutorConfig):
    """Execution settings (the executor's, plus the preprocessing driver's); none of them is part
    of any key."""

    max_plan_tasks: int | None = Field(None, ge=1, description="input videos probed at once (empty: cluster CPUs)")
    work_dir: str | None = Field(None, description="scratch folder for unfinished clips (empty: OUTPUT/.work)")
    resume: bool = Field(True, description="skip inputs and clips a previous run finished")
    device: str = Field("auto", description="device for stages whose own device is 'auto' (cpu, cuda:N, ...)")
    progress: bool = Field(True, description="show a progress bar on a terminal")


class PreprocessJob(PreprocessConfig):
    """A preprocessing config plus how to run it."""

    runtime: RuntimeConfig = RuntimeConfig()

    def stage_config(self) -> PreprocessConfig:
        """The part that decides the results (what plans, stages and clip ids see)."""
        data = self.model_dump(exclude={"runtime"})
        if self.runtime.device != "auto":
            for section in DEVICE_SECTIONS:
                if data.get(section, {}).get("device") == "auto":
                    data[section]["device"] = self.runtime.device
        return PreprocessConfig.model_validate(data)

    def content_hash(self) -> str:
        return content_hash(self.stage_config())
