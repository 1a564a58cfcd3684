"""Subcommands of the ``anycharv`` CLI, one module each (``register(subparsers)``)."""
