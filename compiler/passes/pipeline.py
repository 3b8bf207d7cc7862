"""Passes and the pipeline that runs them, with instruments around them (not inside).

A pass has a name, what it requires (ONNX domains a backend must accept for its output), and
returns a `PassResult` saying whether it changed the graph and what it did. Instruments watch
each pass from outside, as TVM's pass instruments do: time, op counts before and after, graph
dumps, and a numerics check that runs the graph before and after and names the first output
that diverged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

import numpy as np
import onnx

from compiler.errors import BuildError


@dataclass(frozen=True)
class PassResult:
    model: onnx.ModelProto
    modified: bool
    details: Mapping[str, Any] = field(default_factory=dict)  # e.g. {"fired": 3} or {"explain": "..."}


class Pass(Protocol):
    name: str
    requires_domains: tuple[str, ...]  # op domains its output may contain besides the standard one

    def run(self, model: onnx.ModelProto) -> PassResult: ...


class Instrument(Protocol):
    def before(self, pass_: Pass, model: onnx.ModelProto) -> None: ...

    def after(self, pass_: Pass, before: onnx.ModelProto, result: PassResult, record: dict[str, Any]) -> None: ...


def op_histogram(model: onnx.ModelProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in model.graph.node:
        key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


class Timing:
    def before(self, pass_: Pass, model: onnx.ModelProto) -> None:
        self._start = time.perf_counter()

    def after(self, pass_, before, result, record) -> None:
        record["seconds"] = round(time.perf_counter() - self._start, 4)


class OpCounts:
    def before(self, pass_, model) -> None:
        pass

    def after(self, pass_, before, result, record) -> None:
        record["nodes_before"] = len(before.graph.node)
        record["nodes_after"] = len(result.model.graph.node)
        if result.modified:
            b, a = op_histogram(before), op_histogram(result.model)
            record["op_delta"] = {op: a.get(op, 0) - b.get(op, 0) for op in sorted(set(a) | set(b)) if a.get(op, 0) != b.get(op, 0)}


@dataclass
class Dump:
    """Write the graph after the named passes (or after every pass when ``after`` is None)."""

    directory: Path
    only: frozenset[str] | None = None  # pass names; None = every pass
    _count: int = 0

    def before(self, pass_, model) -> None:
        pass

    def after(self, pass_, before, result, record) -> None:
        self._count += 1
        if self.only is None or pass_.name in self.only:
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / f"{self._count:02d}-{pass_.name}.onnx"
            onnx.save(result.model, path)
            record["dump"] = str(path)


class PassNumericsError(BuildError):
    def __init__(self, pass_name: str, output: str, max_abs: float, cosine: float) -> None:
        super().__init__(
            f"pass {pass_name!r} changed the model's numerics: output {output!r} differs from before the pass "
            f"(max|err| {max_abs:.3e}, cosine {cosine:.6f}). Drop it from the target's [fusion] rules or report it."
        )
        self.pass_name, self.output = pass_name, output


@dataclass
class Numerics:
    """Run the graph on ONNX Runtime's CPU provider before and after each modifying pass."""

    inputs: Mapping[str, np.ndarray]
    atol: float = 1e-4
    rtol: float = 1e-3

    def before(self, pass_, model) -> None:
        pass

    def after(self, pass_, before, result, record) -> None:
        if not result.modified:
            return
        from calibration import compare_outputs
        from compiler.passes.quantize import run_graph

        want, got = run_graph(before, self.inputs), run_graph(result.model, self.inputs)
        for error in compare_outputs(want, got):
            if error.max_abs_error > self.atol + self.rtol * error.max_abs_reference:
                raise PassNumericsError(pass_.name, error.output, error.max_abs_error, error.cosine)
        record["numerics"] = "unchanged"


def load_problem(model: onnx.ModelProto) -> str | None:
    """Why ONNX Runtime cannot load ``model`` as an application would (its default optimization level, whose
    rewrites re-infer every shape: a rewrite whose output contradicts the shapes its consumers expect fails
    there, where a load without optimizations merges the shapes leniently), or None."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - the runtime's message is the diagnosis
        return str(exc).replace("[ONNXRuntimeError] : 1 : FAIL : ", "").strip()
    return None


def run_pipeline(model: onnx.ModelProto, passes: Sequence[Pass], instruments: Sequence[Instrument] = ()) -> tuple[onnx.ModelProto, list[dict[str, Any]]]:
    """Run ``passes`` in order; returns the final graph and one record per pass.

    A pass whose rewritten graph no longer loads (a node's inferred shapes or types contradict it) is rolled
    back: the graph stays as it was before the pass, and the record names the pass and the runtime's error."""
    records = []
    for pass_ in passes:
        for instrument in instruments:
            instrument.before(pass_, model)
        result = pass_.run(model)
        if result.modified:
            problem = load_problem(result.model)
            if problem:
                result = PassResult(model, False, {**dict(result.details), "fired": 0,
                                                   "rolled_back": f"the rewritten graph does not load: {problem}"})
        record: dict[str, Any] = {"name": pass_.name, "modified": result.modified, **dict(result.details)}
        for instrument in instruments:
            instrument.after(pass_, model, result, record)
        records.append(record)
        model = result.model
    return model, records
