"""`TracedModel`: what every pass and backend receives from the front end."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import onnx

from targets.signature import Signature

#: Runs the float reference: input name -> array in, output name -> array out.
ReferenceFn = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass(frozen=True)
class TracedModel:
    """A model traced into a graph.

    ``onnx_model`` is the portable form every ONNX-consuming backend lowers;
    ``exported_program`` is kept when the source is PyTorch, for backends that
    consume the torch program (TVM's torch importer, Core ML). ``reference``
    computes the float outputs that artifacts are verified against.
    """

    name: str
    source: str  # file path, "example", or "<module ClassName>"
    source_kind: str  # "pytorch", "onnx" or "huggingface"
    source_digest: str
    signature: Signature
    onnx_model: onnx.ModelProto = field(repr=False)
    reference: ReferenceFn = field(repr=False, compare=False)
    exported_program: Any = field(default=None, repr=False, compare=False)
    #: Bundled samples (example model only): input name -> batch of samples, plus labels.
    samples: Mapping[str, np.ndarray] | None = field(default=None, repr=False, compare=False)
    #: Precision of ``onnx_model`` after the precision stage ("fp32" as traced), and the passes that made it.
    graph_precision: str = "fp32"
    passes: tuple[Mapping[str, Any], ...] = ()
    #: Calibration samples (a `CalibrationSet`), handed only to a backend that quantizes this precision with its
    #: own tool (`BackendBase.calibrated_precisions`, e.g. NNCF); None otherwise.
    calibration: Any = field(default=None, repr=False, compare=False)
