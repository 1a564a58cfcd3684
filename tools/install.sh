#!/usr/bin/env bash
# Creates .venv (if needed) and installs anycharv with its test extras.
# CPU machines (no nvidia-smi, or ANYCHARV_TORCH=cpu): torch 2.13.0 CPU + constraints file, and the
# torchvision CPU fix only where torchvision's compiled ops fail to load.
# GPU machines: install your CUDA torch/torchvision first (README), then this script keeps them.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
STAMP="$VENV/.anycharv-installed"
HASH=$(cat pyproject.toml requirements/*.txt tools/torchvision_cpu_fix.py tools/apply_torchvision_fix.py tools/install.sh | sha256sum | cut -c1-16)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$HASH" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
VPY="$VENV/bin/python"
"$VPY" -m pip install -q --upgrade pip setuptools wheel
MODE=${ANYCHARV_TORCH:-auto}
if [ "$MODE" = auto ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then MODE=gpu; else MODE=cpu; fi
fi
if [ "$MODE" = cpu ]; then
  echo "[install] CPU install: torch 2.13.0 + requirements/constraints-cpu.txt"
  "$VPY" -m pip install -q torch==2.13.0
  "$VPY" -m pip install -q -c requirements/constraints-cpu.txt -e ".[test]"
else
  echo "[install] GPU install: keeping the installed CUDA torch"
  "$VPY" -c "import torch; assert torch.cuda.is_available(), 'install a CUDA torch first (see README)'"
  "$VPY" -m pip install -q -c requirements/constraints-gpu.txt -e ".[test]"
fi
"$VPY" tools/apply_torchvision_fix.py
echo "$HASH" > "$STAMP"
echo "[install] done: $VENV"
