"""One executor for every parallel job: tasks through stages, with backends ``local``,
``ray-actors`` and ``ray-data`` (``make_executor``). Ray is imported only by the Ray backends."""

from anycharv.executor.base import MAX_WORKER_REPLACEMENTS, Executor, make_executor
from anycharv.executor.config import BACKENDS, ExecutorConfig
from anycharv.executor.stage import Stage, StageResources, check_order
from anycharv.executor.stats import RunStats, StageStats
from anycharv.executor.task import OK, REJECTED, RETRY_REASONS, Task
from anycharv.executor.worker import PipelineError, SetupError

__all__ = ["BACKENDS", "MAX_WORKER_REPLACEMENTS", "OK", "REJECTED", "RETRY_REASONS", "Executor", "ExecutorConfig",
           "PipelineError", "RunStats", "SetupError", "Stage", "StageResources", "StageStats", "Task", "check_order",
           "make_executor"]
