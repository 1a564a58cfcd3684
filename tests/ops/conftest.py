"""The operations tests start real servers; ``ops_servers.py`` holds how (importable by the tests and
by ``benchmarks/cli_startup.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
