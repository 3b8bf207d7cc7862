"""The `chipfit.targets` entry points: this package's spec files."""

from importlib import resources

from targets.spec import TargetSpec, load_spec


def _load(name: str) -> TargetSpec:
    with resources.as_file(resources.files(__package__).joinpath(f"{name}.toml")) as path:
        return load_spec(path)


def rk3588() -> TargetSpec:
    return _load("rk3588")


def rk3576() -> TargetSpec:
    return _load("rk3576")
