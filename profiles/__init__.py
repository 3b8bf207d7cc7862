"""Profiles: runners, latency statistics, memory and energy, comparison against baselines.

Today: latency statistics for a callable (used by the build summary's host column).
"""
