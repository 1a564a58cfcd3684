"""Install the CPU torchvision fix into this interpreter's site-packages, only where it is needed.

Checks in a subprocess whether ``import torchvision`` works; if it does, nothing is installed. A
previously installed fix is brought up to this version first (the check passes *because* of it,
so it would otherwise never be updated); it is inert when the real ops load. Otherwise copies
``tools/torchvision_cpu_fix.py`` next to the packages with a ``.pth`` line that imports it, then
checks again and fails loudly if torchvision still does not import.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

CHECK = "import torchvision, torch; from torchvision.ops import nms; nms(torch.zeros(1, 4), torch.ones(1), 0.5)"


def torchvision_works() -> bool:
    return subprocess.run([sys.executable, "-c", CHECK], capture_output=True).returncode == 0


def main() -> int:
    site = Path(sysconfig.get_paths()["purelib"])
    installed = site / "anycharv_torchvision_cpu_fix.py"
    if installed.is_file():
        shutil.copy(Path(__file__).with_name("torchvision_cpu_fix.py"), installed)
    if torchvision_works():
        print("[torchvision-fix] torchvision imports and runs nms: no fix needed")
        return 0
    shutil.copy(Path(__file__).with_name("torchvision_cpu_fix.py"), installed)
    (site / "anycharv_torchvision_cpu_fix.pth").write_text("import anycharv_torchvision_cpu_fix\n")
    if not torchvision_works():
        print("[torchvision-fix] installed, but torchvision still fails to import", file=sys.stderr)
        subprocess.run([sys.executable, "-c", CHECK])
        return 1
    print(f"[torchvision-fix] installed CPU nms fallback into {site}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
