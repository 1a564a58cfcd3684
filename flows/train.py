"""Prefect flow ``train``: one training stage on a latent cache (Ray Train inside the task).

Typed parameters (``data``, ``output``, ``config: TrainJob``) give the UI a form. The run is
resumable, so a retry of ``train-stage`` (or a rerun of the flow) continues from the last
checkpoint. Artifacts: the loss curve, the validation scores with the last preview strip, and a
link to the checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from anycharv.flows.artifacts import thumbnail_data_uri
from anycharv.flows.retry_policy import retry_unless_user_error
from anycharv.output_paths import check_output_dir
from anycharv.training.config import TrainJob
from anycharv.training.launcher import run_training
from anycharv.training.metrics import read_jsonl
from anycharv.training.run_layout import RunLayout


@task(name="train-stage", retries=1, retry_delay_seconds=5, retry_condition_fn=retry_unless_user_error,
      cache_policy=NONE, persist_result=False)
def train_stage(data: str, output: str, config: TrainJob) -> dict[str, Any]:
    return run_training(config, data, output)


def loss_curve(layout: RunLayout) -> Path | None:
    """``RUN/loss.png``: the loss per step and its running mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    records = read_jsonl(layout.metrics)
    if not records:
        return None
    steps = np.array([r["step"] for r in records])
    loss = np.array([r["loss"] for r in records])
    window = max(1, len(loss) // 20)
    smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
    fig, ax = plt.subplots(figsize=(6, 3), dpi=100)
    ax.plot(steps, loss, lw=0.6, alpha=0.5, label="loss")
    ax.plot(steps[window - 1:], smooth, lw=1.5, label=f"mean of {window}")
    ax.set_xlabel("step")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    path = layout.root / "loss.png"
    fig.savefig(path)
    plt.close(fig)
    return path


@task(name="export-model", cache_policy=NONE, persist_result=False)
def export_run(run_dir: str, output: str) -> str:
    """The run's latest checkpoint as a pipeline folder (``anycharv export``)."""
    from anycharv.training.export import export_model

    return str(export_model(run_dir, output))


@task(name="publish-training-artifacts", cache_policy=NONE, persist_result=False)
def publish(summary: dict[str, Any]) -> None:
    from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

    layout = RunLayout.at(summary["run_dir"])
    stage = summary["stage"].replace("_", "-")
    curve = loss_curve(layout)
    validations = read_jsonl(layout.validation_log)
    lines = [f"# Training {summary['stage']}", "", f"- run folder: `{layout.root}`",
             f"- step {summary.get('final_step')} of {summary['max_steps']}, last loss {summary.get('last_loss')}",
             f"- checkpoint: `{summary.get('checkpoint')}`", ""]
    if curve is not None:
        lines += [f"![loss]({thumbnail_data_uri(curve, height=300)})", ""]
    if validations:
        last = validations[-1]
        lines += [f"Validation at step {last['step']} ({last['clips']} {last['split']} clip(s)): PSNR "
                  f"{last['psnr']} dB (inside the mask {last['psnr_mask']}, outside {last['psnr_outside']}); "
                  "target over generated:", ""]
        if last.get("preview") and Path(last["preview"]).is_file():
            lines.append(f"![validation]({thumbnail_data_uri(Path(last['preview']), height=240)})")
        create_table_artifact(table=[{k: v for k, v in r.items() if k != "preview"} for r in validations],
                              key=f"train-{stage}-validation", description="Self-reconstruction PSNR per validation")
    create_markdown_artifact(markdown="\n".join(lines) + "\n", key=f"train-{stage}-summary",
                             description=f"Training {summary['stage']}: loss curve and validation preview")
    if summary.get("checkpoint"):
        create_link_artifact(link=Path(summary["checkpoint"]).as_uri(), link_text=Path(summary["checkpoint"]).name,
                             key=f"train-{stage}-checkpoint", description="Latest checkpoint")


@flow(name="train", log_prints=True, persist_result=False, result_serializer="json")
def train(data: str, output: str, config: TrainJob = TrainJob()) -> dict[str, Any]:
    """Train ``config.train.stage`` on the latent cache ``data`` into the run folder ``output``
    (resumes a run already there; refuses a folder of another run)."""
    output = str(check_output_dir(output, "output"))
    summary = train_stage(data, output, config)
    publish(summary)
    get_run_logger().info("train %s: step %s, last loss %s", config.train.stage, summary.get("final_step"),
                          summary.get("last_loss"))
    return summary
