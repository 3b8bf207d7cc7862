"""Errors a release engineer can act on. Each carries the exit code the CLI returns.

`UsageError` (exit 2): the input is wrong: a file, an option, a target name.
`BuildError` (exit 1): the input was fine but a build or verification failed.
Target and spec problems come from `targets.spec.TargetError` and count as usage errors.
"""

from __future__ import annotations


class ChipfitError(Exception):
    exit_code = 1


class UsageError(ChipfitError):
    """Bad input: name the file, node or option, and what to do instead."""

    exit_code = 2


class BuildError(ChipfitError):
    """A backend could not lower the model, or an artifact failed verification."""

    exit_code = 1


class UnsupportedOpError(BuildError):
    """A backend cannot lower an operator. Names the node and the op."""

    def __init__(self, backend: str, op: str, node: str, detail: str = "") -> None:
        self.backend, self.op, self.node = backend, op, node
        msg = f"backend {backend!r} cannot lower op {op!r} (node {node!r})"
        if detail:
            msg += f": {detail}"
        super().__init__(msg)
