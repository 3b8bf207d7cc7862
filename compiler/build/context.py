"""What one build is asked for (`BuildOptions`: the requests, and how this invocation runs) and what it runs with
(`BuildContext`: registries, the host, where progress goes), both passed explicitly."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from compiler.fusion_stage import FusionOptions
from targets.backend import Backend
from targets.host import HostInfo, detect_host
from targets.registry import EntryPointRegistry, backend_registry, target_registry
from targets.request import BuildRequest, ModelSource, ProfileRequest
from targets.spec import TargetSpec

Progress = Callable[[str], None]


class BuildOptions:
    """One model for several targets: the build requests, and how this invocation runs.

    ``settings`` are request options by their public names (``precision="int8"``,
    ``calibration="samples/"``, ``method="mse"``, ``fusion=False``...; see `targets.request`); each target
    gets a `BuildRequest` made from them. Or give the ``requests`` themselves (a release worker does).
    ``cache_dir`` (calibration statistics), ``measure_latency`` and ``fusion`` dumps change no artifact.
    """

    def __init__(self, targets: Sequence[str] = (), out_dir: Path | str = "build", *,
                 requests: Sequence[BuildRequest] = (), cache_dir: Path | None = None, measure_latency: bool = True,
                 fusion: FusionOptions | bool | None = None, profile: ProfileRequest | None = None,
                 force: bool = False, **settings: Any) -> None:
        self.targets = tuple(targets) or tuple(r.target for r in requests)
        # absolute: child processes (onnxruntime-genai's builder, isolated backends) run in other folders
        self.out_dir = Path(out_dir).absolute()
        self.cache_dir = Path(cache_dir).absolute() if cache_dir is not None else None
        self.measure_latency = measure_latency
        self.force = force  # replace an artifact of another precision at the same place
        # ``fusion`` is the request option (a bool), or FusionOptions: that option plus where to dump graphs
        self.fusion = fusion if isinstance(fusion, FusionOptions) else FusionOptions()
        if isinstance(fusion, FusionOptions):
            settings.setdefault("fusion", fusion.enabled)
            settings.setdefault("explain_fusion", fusion.explain)
        elif fusion is not None:
            settings["fusion"] = fusion
        self._settings = settings
        self._profile = profile or ProfileRequest()
        self._requests = tuple(requests)

    def requests(self, model: Any) -> list[BuildRequest]:
        if self._requests:
            return list(self._requests)
        base = BuildRequest(ModelSource(model.source, model.name), "", profile=self._profile)
        template = base.with_options(**self._settings)
        return [replace(template, target=t) for t in self.targets]


@dataclass
class BuildContext:
    """What a build needs besides its options; made fresh per build, passed explicitly."""

    targets: EntryPointRegistry[TargetSpec] = field(default_factory=target_registry)
    backends: EntryPointRegistry[Backend] = field(default_factory=backend_registry)
    host: HostInfo = field(default_factory=detect_host)
    progress: Progress = lambda message: None


class BuildRun:
    """What every cell of one build shares besides the inputs: options, context, the toolchain versions."""

    def __init__(self, options: BuildOptions, ctx: BuildContext, versions: Mapping[str, str]) -> None:
        self.options, self.ctx, self.versions = options, ctx, dict(versions)


def print_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
