"""anycharv.evaluation: scores of a trained model on held-out clips of a latent cache (self-reconstruction).

``run_evaluation(job, model, data, output)`` reconstructs each chosen clip of the cache's val split
from its own character, pose and box-mask condition, compares it with the clip's frames (its
cached latents decoded) and writes per-clip and aggregate scores (``clips.parquet``,
``aggregate.parquet``, ``summary.json``); ``is_better`` decides promotions on its primary metric.
PSNR, SSIM and L1 (whole frame, inside and outside the mask) are always computed; LPIPS, CLIP-I,
DINO-I, FID and FVD only from local weight files (``anycharv.evaluation.feature_metrics``).
"""
