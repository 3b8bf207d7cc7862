"""Run an artifact on this machine and check its outputs against the float reference."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from calibration import compare_outputs
from compiler.backends import RunPlan
from targets.numerics import Numerics, within
from targets.signature import Signature, run_batched, static_batch
from targets.spec import Tolerance

__all__ = ["Numerics", "run_in_batches", "verify", "within"]


def run_in_batches(plan: RunPlan, inputs: Mapping[str, np.ndarray], signature: Signature) -> dict[str, np.ndarray]:
    """Feed ``inputs`` in chunks of the artifact's static batch when the artifact has one."""
    return run_batched(plan.runner.run, inputs, static_batch(signature))


def verify(
    plan: RunPlan,
    signature: Signature,
    inputs: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    tolerance: Tolerance,
    precision: str,
    inputs_label: str,
    labels: np.ndarray | None = None,
) -> Numerics:
    actual = run_in_batches(plan, inputs, signature)
    errors = tuple(compare_outputs(reference, actual))
    task = None
    if labels is not None:
        first = next(iter(actual.values()))
        ref_first = next(iter(reference.values()))
        task = {"samples": int(len(labels)),
                "top1_pct": round(float((first.argmax(-1) == labels).mean() * 100), 2),
                "top1_float_pct": round(float((ref_first.argmax(-1) == labels).mean() * 100), 2)}
    ok = all(within(e, tolerance) for e in errors)
    return Numerics(
        status="verified" if ok else "failed",
        precision=precision,
        reason="" if ok else "outside tolerance: " + ", ".join(e.output for e in errors if not within(e, tolerance)),
        runner=plan.runner.description + (f" [{plan.note}]" if plan.note else ""),
        proxy=plan.proxy,
        execution=plan.execution,
        inputs=inputs_label,
        tolerance=tolerance,
        outputs=errors,
        task=task,
    )
