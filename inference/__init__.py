"""anycharv.inference: running the trained pipeline on real videos.

Per-video work as plain Python (no Prefect, no Ray), so the CLI, batch jobs and tests call the same
code: ``target_prep`` turns a target video into the model's inputs (tracked people, box masks, pose
renders), ``video.infer_video`` runs reference cut-out, the pipeline and paste-back on one video.
It may import preprocessing (tracking, pose), model (the pipeline), datasets and core.
"""
