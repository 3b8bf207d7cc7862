"""Run an artifact on this machine and check its outputs against the float reference."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from calibration import OutputError, compare_outputs
from compiler.backends import RunPlan
from compiler.signature import Signature, run_batched, static_batch
from targets.spec import Tolerance


@dataclass(frozen=True)
class Numerics:
    status: str  # "verified", "failed" or "not-run"
    precision: str
    reason: str = ""
    runner: str = ""
    proxy: bool = False
    inputs: str = ""
    tolerance: Tolerance | None = None
    outputs: tuple[OutputError, ...] = ()
    structure: Mapping[str, Any] | None = None
    #: Task accuracy on labelled verification samples: top-1 of the artifact and of the float model.
    task: Mapping[str, Any] | None = None

    @property
    def passed(self) -> bool:
        return self.status != "failed"

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"status": self.status, "precision": self.precision}
        if self.reason:
            data["reason"] = self.reason
        if self.runner:
            data.update(runner=self.runner, proxy=self.proxy, inputs=self.inputs)
        if self.tolerance is not None:
            data["tolerance"] = {"atol": self.tolerance.atol, "rtol": self.tolerance.rtol, "min_cosine": self.tolerance.min_cosine}
        if self.outputs:
            data["outputs"] = [o.to_dict() for o in self.outputs]
        if self.structure is not None:
            data["structure"] = dict(self.structure)
        if self.task is not None:
            data["task"] = dict(self.task)
        return data

    def summary(self) -> str:
        if self.status == "not-run":
            return f"not run here: {self.reason}"
        if not self.outputs:
            return f"FAILED: {self.reason}"
        worst_cos = min(o.cosine for o in self.outputs) if self.outputs else float("nan")
        worst_abs = max(o.max_abs_error for o in self.outputs) if self.outputs else float("nan")
        head = {"verified": "ok", "failed": "FAILED"}[self.status] + (" (proxy)" if self.proxy else "")
        return f"{head} cos {worst_cos:.6f} max|err| {worst_abs:.2e}"


def within(error: OutputError, tolerance: Tolerance) -> bool:
    bound = tolerance.atol + tolerance.rtol * error.max_abs_reference
    return error.max_abs_error <= bound and error.cosine >= tolerance.min_cosine


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
        inputs=inputs_label,
        tolerance=tolerance,
        outputs=errors,
        task=task,
    )
