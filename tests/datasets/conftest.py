"""Registers ``cache_fixtures.py`` as the module ``anycharv_test_cache_fixtures`` before the tests
here are collected (tests/ is not a package; dataclasses need their module in ``sys.modules``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

NAME = "anycharv_test_cache_fixtures"
if NAME not in sys.modules:
    _spec = importlib.util.spec_from_file_location(NAME, Path(__file__).with_name("cache_fixtures.py"))
    sys.modules[NAME] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules[NAME])
