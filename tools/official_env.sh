#!/usr/bin/env bash
# Creates the virtual environment that the official AnyCharV code runs in, for benchmarks/vs_official.py.
#
#   tools/official_env.sh DIR_OF_VENV [OFFICIAL_SRC]
#
# DIR_OF_VENV: where the venv goes (created if missing; rerunning brings it to the pins below).
# OFFICIAL_SRC: optional clone of github AnyCharV/AnyCharV; if given, the script checks that its
# pipeline module imports in the new venv.
#
# Pins: the environment the golden sets were made in (shared/reference/*/README.md): Python 3.11, torch 2.13.0
# CPU, diffusers 0.28.0, transformers 4.44.2, huggingface_hub 0.25.2 (diffusers 0.28 still imports
# `cached_download`, which later hubs removed), numpy 1.26.4, Pillow 13.0.0, safetensors 0.8.0, einops 0.8.2.
#
# torchvision: the official pipeline imports `torchvision.transforms` (pure Python). The registry's
# torchvision 0.28.0 (the release built against torch 2.13) is a CUDA build whose compiled ops cannot load
# beside a CPU torch, so `import torchvision` fails ('operator torchvision::nms does not exist'). It is
# installed with --no-deps (so it cannot replace torch) and tools/apply_torchvision_fix.py then installs the
# project's import hook into this venv, only if the import fails.
#
# xformers: not installed (no CPU build). The official models import it only behind
# `is_xformers_available()`, and the official script's `enable_xformers_memory_efficient_attention()` calls
# are skipped by benchmarks/official_side.py, so every attention runs diffusers' default SDPA processor.
# No shim is needed.
#
# Environment: PYTHON (interpreter that creates the venv, default python3.11), TORCH_INDEX_URL (an index
# that serves CPU torch wheels, where the default index would give a CUDA build).
set -euo pipefail
VENV=${1:?usage: tools/official_env.sh DIR_OF_VENV [OFFICIAL_SRC]}
SRC=${2:-}
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-python3.11}

"$PY" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "official venv: Python 3.11 needed, got " + sys.version)'
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
VPY="$VENV/bin/python"

echo "[official-env] torch 2.13.0 (CPU)"
if [ -n "${TORCH_INDEX_URL:-}" ]; then
  "$VPY" -m pip install -q torch==2.13.0 --index-url "$TORCH_INDEX_URL"
  "$VPY" -m pip install -q numpy==1.26.4
else
  "$VPY" -m pip install -q torch==2.13.0 numpy==1.26.4
fi
TORCH_VERSION=$("$VPY" -c 'import torch; print(torch.__version__)')
case "$TORCH_VERSION" in
  2.13.0*) ;;
  *) echo "[official-env] expected torch 2.13.0, got $TORCH_VERSION" >&2; exit 1 ;;
esac
# keeps every later install from replacing this torch
PINS="$VENV/official-pins.txt"
echo "torch==$TORCH_VERSION" > "$PINS"

echo "[official-env] diffusers 0.28.0, transformers 4.44.2 and the rest"
"$VPY" -m pip install -q -c "$PINS" diffusers==0.28.0 transformers==4.44.2 huggingface_hub==0.25.2 \
  numpy==1.26.4 Pillow==13.0.0 safetensors==0.8.0 einops==0.8.2 tqdm

echo "[official-env] torchvision 0.28.0 (--no-deps) and the CPU import fix"
"$VPY" -m pip install -q --no-deps torchvision==0.28.0
"$VPY" "$HERE/apply_torchvision_fix.py"

"$VPY" - <<'EOF'
import importlib.util

import diffusers
import torch
import transformers
from torchvision import transforms  # noqa: F401  (what the official pipeline imports)

assert torch.__version__.startswith("2.13.0"), torch.__version__
assert diffusers.__version__ == "0.28.0" and transformers.__version__ == "4.44.2"
assert importlib.util.find_spec("xformers") is None, "xformers must not be installed (CPU: SDPA attention)"
print(f"[official-env] torch {torch.__version__}, diffusers {diffusers.__version__}, "
      f"transformers {transformers.__version__}: ok")
EOF

if [ -n "$SRC" ]; then
  (cd "$SRC" && "$VPY" -c 'import src.pipelines.pipeline_pose2vid_long_anycharv, src.models.unet_3d, src.models.unet_2d_condition, src.models.pose_guider; print("[official-env] official pipeline imports: ok")')
fi
echo "[official-env] done: $VPY"
