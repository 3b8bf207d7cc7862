"""The `chipfit.targets` entry point: load this package's spec file."""

from importlib import resources

from targets.spec import TargetSpec, load_spec


def spec() -> TargetSpec:
    with resources.as_file(resources.files(__package__).joinpath("my-npu.toml")) as path:
        return load_spec(path)
