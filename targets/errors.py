"""Errors a release engineer can act on, shared by every chipfit package.

Each carries the exit code the CLI returns: `UsageError` (2) for bad input (a file, an option, a
target name), caught before any work; `ChipfitError` (1) for input that was fine but could not be
built. The build stages add their own types in `compiler.errors`.
"""

from __future__ import annotations


class ChipfitError(Exception):
    exit_code = 1


class UsageError(ChipfitError):
    """Bad input: name the file, node or option, and what to do instead."""

    exit_code = 2


class TargetError(UsageError):
    """A target cannot be found, loaded or used. The message says what to do."""


class SpecError(TargetError):
    """A spec file is malformed. The message names the file and the key."""


class SchemaError(UsageError):
    """A record on disk (manifest, profile, index, request) does not match its schema; names the key."""
