"""Calibration and sample data, and accuracy of outputs against the float reference.

This package reads user samples and measures output error; it never writes artifacts.
"""

from calibration.accuracy import OutputError, compare_outputs
from calibration.readers import CalibrationSet, load_samples, random_samples

__all__ = ["CalibrationSet", "OutputError", "compare_outputs", "load_samples", "random_samples"]
