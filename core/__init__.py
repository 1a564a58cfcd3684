"""anycharv: data preparation, training and inference for AnyCharV character video generation.

The root package holds what every part shares: typed errors, the YAML/CLI config loader, the
offline asset cache and the ``anycharv`` command line. Sub-packages (``anycharv.model``,
``anycharv.preprocessing``, ...) are mapped from the repository's top-level folders.
"""

__version__ = "0.1.0"
