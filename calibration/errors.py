"""The error every calibration reader raises (its own module, so that the readers of each format import it
without importing one another)."""

from __future__ import annotations


class CalibrationError(ValueError):
    """Calibration or sample data cannot be used. The message names the file and the input."""
