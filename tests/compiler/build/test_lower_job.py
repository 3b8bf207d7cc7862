"""One channel into a backend: an option declared in the request reaches the backend that reads it, the cache key
and the release file's keys with no other edit; a backend's claims are checked when the registry loads it."""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from compiler.backends.onnxruntime import OnnxRuntimeBackend
from compiler.build import BuildContext, BuildOptions, build
from compiler.options import add_arguments, read_table, release_keys, values_from_arguments
from compiler.release.cache import key_components
from targets.backend import BACKEND_API_VERSION, BackendBase, Capabilities, check_backend
from targets.errors import TargetError
from targets.host import detect_host
from targets.registry import backend_registry, target_registry
from targets.request import BuildRequest, ModelSource, option, set_options


@dataclass(frozen=True)
class TilingRequest:
    tile: int = option(8, name="tile", minimum=1, help="the vendor compiler's tile size")


@dataclass(frozen=True)
class ExtendedRequest(BuildRequest):
    """`BuildRequest` as a developer extends it in targets/request.py: one more option group, nothing else."""

    tiling: TilingRequest = TilingRequest()


class TilingBackend(OnnxRuntimeBackend):
    """ONNX Runtime as a vendor plugin that reads the new option from its job (and records it in its pass)."""

    name = "tiling"
    options_schema = dataclasses.replace(OnnxRuntimeBackend.options_schema, backend="tiling")

    def lower(self, job):
        lowered = super().lower(job)
        return dataclasses.replace(lowered, passes=lowered.passes + ({"name": "tile", "tile": job.request.tiling.tile},))


def test_an_option_added_to_the_request_reaches_the_backend_the_cache_key_and_the_release_keys(example_traced,
                                                                                               tmp_path):
    # the command line and the release file take it, by the name it was declared with
    parser = argparse.ArgumentParser()
    add_arguments(parser, ExtendedRequest)
    assert values_from_arguments(parser.parse_args(["--tile", "16"]), ExtendedRequest) == {"tile": 16}
    assert "tile" in release_keys(ExtendedRequest)
    assert read_table({"tile": 16}, ExtendedRequest, "model[0].", "release.toml") == {"tile": 16}
    # the cache key changes with it
    host = target_registry().get("host")
    spec = dataclasses.replace(host, id="tiling-chip", backends=("tiling",), build_all_backends=False,
                               backend_options={"tiling": {"execution_provider": "CPUExecutionProvider"}})
    backend = TilingBackend()
    base = ExtendedRequest(ModelSource("example", "example"), "tiling-chip", precision="fp32")
    tiled = set_options(base, {"tile": 16})
    keys = [key_components(r, spec, [backend], detect_host(), "toolchain", "source")["settings"] for r in (base, tiled)]
    assert keys[0] != keys[1]
    # and the backend reads it from its job
    ctx = BuildContext(targets=target_registry().including({"tiling-chip": spec}, "test"),
                       backends=backend_registry().including({"tiling": backend}, "test"))
    (result,) = build(example_traced, BuildOptions(requests=[tiled], out_dir=tmp_path, measure_latency=False), ctx)
    assert result.status == "verified", result.message
    # the manifest records the request it was built from (read as JSON: this chipfit's BuildRequest lacks the group)
    data = json.loads((Path(result.artifact) / "manifest.json").read_text())
    assert data["request"]["tiling"] == {"tile": 16}
    assert {"name": "tile", "tile": 16} in data["passes"]


def test_a_backend_claiming_a_protocol_it_lacks_is_refused_at_load_by_name():
    class ClaimsTuning(BackendBase):
        name = "claims-tuning"
        api_version = BACKEND_API_VERSION
        capabilities = Capabilities(consumes="onnx", precisions=("fp32",), tunable=True)

        def lowers_onnx(self, model, precision): return True
        def versions(self): return {}
        def lower(self, job): raise NotImplementedError
        def plan_run(self, *args): raise NotImplementedError

    with pytest.raises(TargetError, match=r"claims capabilities.tunable but lacks tune \(Tuning"):
        check_backend(ClaimsTuning(), "claims-tuning")


def test_a_plugin_for_the_previous_api_is_told_what_changed():
    class Old:
        name, api_version = "old", BACKEND_API_VERSION - 1

    with pytest.raises(TargetError, match=r"version 3 declares what the backend does in one `capabilities"):
        check_backend(Old(), "old")
