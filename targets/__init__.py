"""Target chips: the `TargetSpec` type, its TOML schema and validation, and the registry.

Built-in specs live in ``targets/specs/`` and register through the same
``chipfit.targets`` entry point group a vendor's package uses.
"""

from targets.registry import EntryPointRegistry, PluginLoadError, target_registry
from targets.spec import SpecError, TargetError, TargetSpec, Tolerance, load_spec

__all__ = [
    "EntryPointRegistry",
    "PluginLoadError",
    "SpecError",
    "TargetError",
    "TargetSpec",
    "Tolerance",
    "load_spec",
    "target_registry",
]
