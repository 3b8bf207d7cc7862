"""The ``chipfit`` command line: one module per command (``targets``, ``build``, ``profile``, ``compare``,
``release``, ``conformance``, ``tune``, ``generate``, ``inspect``), the parser and ``main`` in `compiler.cli.main`."""

from compiler.cli.main import main, parser

__all__ = ["main", "parser"]
