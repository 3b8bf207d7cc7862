"""The bottom layer: what chipfit builds for, and the types every stage passes on.

* the `TargetSpec` (``spec.py``), its TOML schema and validation, the built-in chip description files
  (``specs/``) and this machine's own spec (``host.py``, ``builtin.py``);
* the plugin registries (``registry.py``, entry points) and the backend protocol (``backend.py``);
* the records that flow between stages, each a frozen dataclass with one serialisation
  (``schema.py``): `Signature`, `BuildRequest`, `Manifest`, `Profile`, `Comparison`, and the
  numerics and cost records a manifest carries.

This package imports no other chipfit package; every other one imports it.
"""

from targets.errors import ChipfitError, SchemaError, SpecError, TargetError, UsageError
from targets.registry import EntryPointRegistry, PluginLoadError, backend_registry, target_registry
from targets.spec import TargetSpec, Tolerance, load_spec

__all__ = [
    "ChipfitError",
    "EntryPointRegistry",
    "PluginLoadError",
    "SchemaError",
    "SpecError",
    "TargetError",
    "TargetSpec",
    "Tolerance",
    "UsageError",
    "backend_registry",
    "load_spec",
    "target_registry",
]
