"""Fixtures shared by the pipeline tests of this folder."""

from __future__ import annotations

import pytest

from anycharv.model.official import load_official_components
from anycharv.model.pipeline import AnyCharVPipeline


@pytest.fixture(scope="module")
def golden_pipe(reference_dir):
    """The pipeline on the golden set's weights, default mode, no progress bar (one per test module)."""
    p = AnyCharVPipeline.from_components(load_official_components(reference_dir))
    p.set_progress_bar_config(disable=True)
    return p
