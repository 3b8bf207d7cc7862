from importlib.metadata import EntryPoint

import pytest

from targets.registry import PluginLoadError, target_registry
from targets.spec import TargetError

BUILTIN = {"host", "x86-64-avx2", "arm64-cortex-a76", "apple-a17", "snapdragon-8gen3", "snapdragon-8-elite",
           "intel-npu-3720", "intel-core-ultra-cpu"}


def test_builtin_targets_register_through_entry_points(registry):
    assert BUILTIN <= set(registry.names())
    specs, failed = registry.load_all()
    assert not failed
    assert all(specs[name].id == name for name in BUILTIN)


def test_unknown_target_lists_the_known_ones(registry):
    with pytest.raises(TargetError, match=r"unknown target 'rpi9'; known targets: .*arm64-cortex-a76.*host"):
        registry.get("rpi9")


def test_broken_plugin_is_reported_by_name_and_others_work():
    eps = [
        EntryPoint("host", "targets.builtin:host", "chipfit.targets"),
        EntryPoint("broken-npu", "no_such_vendor_package.targets:spec", "chipfit.targets"),
        EntryPoint("wrong-id", "targets.builtin:apple_a17", "chipfit.targets"),
    ]
    registry = target_registry(eps)
    specs, failed = registry.load_all()
    assert list(specs) == ["host"]
    assert "broken-npu" in failed["broken-npu"] and "ModuleNotFoundError" in failed["broken-npu"]
    assert "differs from the spec's id 'apple-a17'" in failed["wrong-id"]
    with pytest.raises(PluginLoadError, match="broken-npu"):
        registry.get("broken-npu")
