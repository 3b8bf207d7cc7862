"""Text that is on every machine with Python: the standard library's own sources, as named text sets.

A decoder LM's weights are calibrated on the user's prompts (``--calibration prompts.txt``); without them, on
the ``python-stdlib`` set below. Its perplexity is measured on a held-out set that shares no file with either,
so a calibrated variant is never judged on the text it was fitted to. The small language model chipfit's tests
and benchmarks train (`compiler.llm.synthetic.stdlib_model`) learns from `TRAINING` and is scored on `HELD_OUT`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from calibration.errors import CalibrationError

#: modules whose sources make the default calibration text of a decoder's weights
CALIBRATION = ("textwrap", "string", "shlex", "fnmatch", "glob", "heapq", "calendar", "cmd", "queue", "sched")
#: modules a test language model learns from (the calibration set's and more; none of `HELD_OUT`)
TRAINING = CALIBRATION + ("difflib", "pprint", "gettext", "tokenize", "wave", "netrc", "colorsys", "bisect",
                          "tabnanny", "zipapp", "code", "optparse")
#: modules whose sources perplexity is measured on: in no other set
HELD_OUT = ("base64", "graphlib", "fractions", "quopri")
DEFAULT_SET = "python-stdlib"


def stdlib_text(modules: tuple[str, ...]) -> str:
    """The sources of ``modules`` joined, in the order given (the running Python's own files)."""
    parts = []
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            raise CalibrationError(f"the standard-library module {name!r} has no Python source in this interpreter")
        parts.append(Path(spec.origin).read_text(encoding="utf-8"))
    return "\n".join(parts)


def source_files(modules: tuple[str, ...]) -> list[str]:
    """Where ``modules``' sources are, for the record."""
    return [str(importlib.util.find_spec(name).origin) for name in modules]
