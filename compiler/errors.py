"""Errors of the build stages. Each carries the exit code the CLI returns and the stage it belongs to.

`UsageError` (exit 2): the input is wrong: a file, an option, a target name (see `targets.errors`).
`BuildError` (exit 1): the input was fine but a stage failed. Its subclasses name the stage, which is
how the conformance kit classifies a failure: from the type raised, never from the message's words.
"""

from __future__ import annotations

from targets.errors import ChipfitError, SchemaError, SpecError, TargetError, UsageError

#: the stages of a build, in order; a failure is classified by the stage whose error type was raised
STAGES = ("LOAD", "LOWER", "QUANTIZE", "RUN", "MISMATCH", "PROFILE")


class BuildError(ChipfitError):
    """A backend could not lower the model, or an artifact failed verification."""

    exit_code = 1
    stage = "LOWER"


class LoadError(BuildError):
    """The model could not be loaded or traced into a graph."""

    stage = "LOAD"


class QuantizeError(BuildError):
    """The precision stage (calibration, quantization, fp16 rewrite, accuracy budget) failed."""

    stage = "QUANTIZE"


class LowerError(BuildError):
    """The backend could not lower the (rewritten) model into an artifact."""

    stage = "LOWER"


class UnsupportedOpError(LowerError):
    """A backend cannot lower an operator. Names the node and the op."""

    def __init__(self, backend: str, op: str, node: str, detail: str = "") -> None:
        self.backend, self.op, self.node = backend, op, node
        msg = f"backend {backend!r} cannot lower op {op!r} (node {node!r})"
        if detail:
            msg += f": {detail}"
        super().__init__(msg)


class RunError(BuildError):
    """The artifact was built but running it failed."""

    stage = "RUN"


class MismatchError(BuildError):
    """The artifact ran but its outputs are outside the target's tolerance."""

    stage = "MISMATCH"


def stage_of(exc: BaseException, default: str = "LOWER") -> str:
    """The stage an exception belongs to: its type's ``stage``, else ``default``."""
    return getattr(exc, "stage", default) if isinstance(exc, BuildError) else default


__all__ = ["STAGES", "BuildError", "ChipfitError", "LoadError", "LowerError", "MismatchError", "QuantizeError",
           "RunError", "SchemaError", "SpecError", "TargetError", "UnsupportedOpError", "UsageError", "stage_of"]
