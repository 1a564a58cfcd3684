"""The executor contract on every backend, with small stages over small tasks: order, publishing,
per-task and per-batch failures, worker deaths, failing setup, teardown, reservations."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from anycharv.executor import (
    BACKENDS,
    MAX_WORKER_REPLACEMENTS,
    ExecutorConfig,
    PipelineError,
    SetupError,
    Stage,
    StageResources,
    Task,
    check_order,
    make_executor,
)
from anycharv.executor.resources import fit_resources

RAY_BACKENDS = [b for b in BACKENDS if b != "local"]


@dataclass(kw_only=True)
class Item(Task):
    name: str
    value: int = 0
    seen_by: list[str] | None = None

    @property
    def task_id(self) -> str:
        return self.name


class Add(Stage):
    name = "add"
    batch_size = 2
    produces = ("value",)

    def process_one(self, task):
        task.value += 1
        task.seen_by = [*(task.seen_by or []), self.name]
        return task


class Square(Stage):
    name = "square"
    requires = ("value",)

    def process_one(self, task):
        if task.value == 4:
            return task.reject("too_big", "4 is where we stop")
        task.value *= task.value
        task.seen_by = [*(task.seen_by or []), self.name]
        return task


class Last(Stage):
    name = "last"

    def process_one(self, task):
        task.seen_by = [*(task.seen_by or []), self.name]
        return task


class Faulty(Stage):
    """Raises on one task (recorded on it) and out of a whole batch for another."""

    name = "faulty"

    def process_batch(self, tasks):
        if any(t.name == "t5" for t in tasks):
            raise RuntimeError("boom in a whole batch")
        return super().process_batch(tasks)

    def process_one(self, task):
        if task.name == "t2":
            raise ValueError("bad item")
        return task


class Dying(Stage):
    name = "dying"

    def __init__(self, names):
        super().__init__()
        self.names = set(names)

    def process_one(self, task):
        if task.name in self.names:
            os._exit(3)
        return task


class BrokenSetup(Stage):
    name = "broken"

    def setup(self):
        raise FileNotFoundError("weights /nowhere/model.onnx are missing")


class MarksTeardown(Stage):
    name = "marks"

    def __init__(self, folder):
        super().__init__()
        self.folder = str(folder)

    def teardown(self):
        Path(self.folder, f"teardown-{os.getpid()}").write_text("done")


def items(n):
    return [Item(name=f"t{i}", value=i) for i in range(n)]


def run(backend, tasks, stages, **config):
    published = []
    with make_executor(ExecutorConfig(executor=backend, **config)) as executor:
        stats = executor.run(tasks, stages, published.append)
    return published, stats


@pytest.fixture(params=BACKENDS)
def backend(request, ray_local):
    return request.param


def test_tasks_go_through_the_stages_in_order_and_are_published_once(backend):
    published, stats = run(backend, items(6), [Add(), Square(), Last()])
    by_name = {t.name: t for t in published}
    assert sorted(by_name) == [f"t{i}" for i in range(6)] and len(published) == 6
    for i in range(6):
        task = by_name[f"t{i}"]
        if i + 1 == 4:  # rejected by square: it skips the rest
            assert (task.status, task.reason, task.seen_by) == ("rejected", "too_big", ["add"])
        else:
            assert task.ok and task.value == (i + 1) ** 2 and task.seen_by == ["add", "square", "last"]
        assert set(task.timings) == set(task.seen_by) | ({"square"} if i + 1 == 4 else set())
    add, square, last = stats.stages
    assert (add.tasks_in, add.tasks_ok, add.batches) == (6, 6, 3)  # batch size 2
    assert (square.tasks_in, square.tasks_ok, square.tasks_rejected) == (6, 5, 1)
    assert last.tasks_in == 5 and stats.published == 6


def test_failures_of_one_task_or_one_batch_are_recorded_and_the_run_goes_on(backend):
    published, stats = run(backend, items(8), [Faulty()])
    reasons = {t.name: (t.reason, t.detail) for t in published}
    assert reasons["t2"] == ("stage_error", "faulty: ValueError: bad item")
    assert reasons["t5"] == ("stage_error", "faulty: RuntimeError: boom in a whole batch")
    assert all(reasons[f"t{i}"] == ("", "") for i in (0, 1, 3, 4, 6, 7))
    assert stats.stages[0].tasks_rejected == 2


def test_a_failing_setup_stops_the_run_with_nothing_published(backend):
    published = []
    with pytest.raises(SetupError, match="broken: setup failed: FileNotFoundError: weights /nowhere/model.onnx"):
        with make_executor(ExecutorConfig(executor=backend)) as executor:
            executor.run(items(3), [Add(), BrokenSetup()], published.append)
    assert published == []


@pytest.mark.parametrize("ray_backend", RAY_BACKENDS)
def test_a_dying_worker_rejects_its_batch_and_is_replaced(ray_backend, ray_local):
    published, stats = run(ray_backend, items(6), [Add(), Dying({"t1", "t4"})])
    reasons = {t.name: t.reason for t in published}
    assert reasons == {"t0": "", "t1": "worker_error", "t2": "", "t3": "", "t4": "worker_error", "t5": ""}
    assert [t for t in published if t.name == "t1"][0].detail.startswith("dying: worker died")


@pytest.mark.parametrize("ray_backend", RAY_BACKENDS)
def test_workers_that_keep_dying_stop_the_run(ray_backend, ray_local):
    doomed = {f"t{i}" for i in range(MAX_WORKER_REPLACEMENTS + 2)}
    with pytest.raises(PipelineError, match=f"dying: workers died {MAX_WORKER_REPLACEMENTS + 1} times; giving up"):
        run(ray_backend, items(len(doomed)), [Dying(doomed)])


@pytest.mark.parametrize("backend_name", ["local", "ray-actors"])
def test_teardown_runs_once_per_worker(backend_name, ray_local, tmp_path):
    published, _ = run(backend_name, items(4), [MarksTeardown(tmp_path)], num_workers=2)
    assert len(published) == 4
    marks = list(tmp_path.glob("teardown-*"))
    assert len(marks) == (1 if backend_name == "local" else 2)


def test_a_run_config_overrides_workers_and_batches_for_that_run(ray_local):
    with make_executor(ExecutorConfig(executor="ray-actors")) as executor:
        stats = executor.run(items(6), [Add()], lambda t: None,
                             config=ExecutorConfig(executor="ray-actors", stage_workers={"add": 2}, batch_size=3))
    assert stats.stages[0].workers == 2 and stats.stages[0].batches == 2


def test_the_pipeline_order_is_checked():
    check_order([Add(), Square()])
    with pytest.raises(ValueError, match=r"square requires \['value'\], which no earlier stage produces"):
        check_order([Square(), Add()])
    with pytest.raises(ValueError, match="stage names must be unique"):
        check_order([Add(), Add()])


class _Res(Stage):
    def __init__(self, name, cpus, gpus=0.0):
        super().__init__()
        self.name, self.resources = name, StageResources(cpus=cpus, gpus=gpus)


def test_reservations_are_fitted_into_the_cluster():
    stages = [_Res("decode", 1), _Res("detect", 1, 0.5), _Res("mask", 2, 1.0)]
    # Enough room: requests are kept as declared.
    fitted = fit_resources(stages, ExecutorConfig(), {"CPU": 8, "GPU": 2})
    assert fitted == [(1, 1.0, 0.0), (1, 1.0, 0.5), (1, 2.0, 1.0)]
    # Too many workers for 2 CPUs / 1 GPU: scaled by one factor so every worker can start.
    fitted = fit_resources(stages, ExecutorConfig(num_workers=2, stage_workers={"mask": 1}), {"CPU": 2, "GPU": 1})
    assert [w for w, _, _ in fitted] == [2, 2, 1]
    assert sum(w * c for w, c, _ in fitted) <= 2 and sum(w * g for w, _, g in fitted) <= 1
    assert fitted[0][1] == pytest.approx(2 / 6, abs=1e-3) and fitted[2][2] == pytest.approx(0.5)
    # No GPU in the cluster: GPU stages still get CPU workers.
    assert [g for _, _, g in fit_resources(stages, ExecutorConfig(), {"CPU": 4})] == [0.0, 0.0, 0.0]
