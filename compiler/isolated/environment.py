"""An isolated backend's own virtual environment: what it declares, where it lives, installing and inspecting it.

A vendor SDK that pins an old stack (rknn-toolkit2 wants onnx<=1.18, protobuf<=4.25) cannot share chipfit's
environment. Its backend declares the environment it needs (`Environment`); ``chipfit toolchain install``
makes it as a virtual environment from registry wheels only, and records the declaration it was made from, so
a changed declaration shows as incomplete instead of running with the wrong stack.

Environments live under ``$CHIPFIT_TOOLCHAINS_DIR``, else ``<chipfit cache dir>/toolchains``: installed
machine state like ``.venv``, not a cache that a run may throw away.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable, Mapping

from compiler.cache_dir import default_cache_dir
from compiler.errors import UsageError

#: the record written into an environment once every step of its install succeeded
MARKER = "chipfit-environment.json"
INSTALL_LOG = "chipfit-install.log"
TOOLCHAINS_ENV = "CHIPFIT_TOOLCHAINS_DIR"


class ToolchainInstallError(UsageError):
    """An isolated environment could not be installed; the message names the step and its log."""


@dataclass(frozen=True)
class SourceBuild:
    """A package the registry has only as source (llama-cpp-python: an sdist that compiles llama.cpp), built into a
    wheel once per machine and kept under ``<toolchains>/.wheels/``; ``unpack`` also keeps its source tree in the
    environment (``<env>/src/<name>/``) for the scripts the wheel does not install (llama.cpp's converter).

    ``build_env`` (e.g. ``CMAKE_ARGS``) enters the wheel's cache key with the machine's CPU: a native build is
    not reused on another CPU."""

    requirement: str  # pinned: "llama-cpp-python==0.3.36"
    build_env: tuple[tuple[str, str], ...] = ()
    unpack: bool = False

    @property
    def name(self) -> str:
        return self.requirement.split("==", 1)[0].strip()


@dataclass(frozen=True)
class Environment:
    """The environment an isolated backend runs in, as data.

    ``requirements`` are pip requirement strings, pinned (``onnx==1.18.0``); ``torch`` is the version of the
    local CPU torch wheel when the SDK imports torch (installed first and pinned: an unpinned torch pulls GBs of
    CUDA); ``no_deps`` are installed with ``--no-deps`` (an SDK whose declared pins cannot be met and which runs
    anyway, as measured); ``check`` is Python code that must run in the finished environment (an import).
    """

    name: str
    requirements: tuple[str, ...] = ()
    torch: str = ""
    no_deps: tuple[str, ...] = ()
    check: str = ""
    #: packages whose versions enter every manifest (all of them enter the build cache key)
    reported: tuple[str, ...] = ()
    source_builds: tuple[SourceBuild, ...] = ()

    def digest(self) -> str:
        declared = asdict(self)
        if not self.source_builds:  # an environment of wheels only keeps the digest it had before source builds
            del declared["source_builds"]
        return hashlib.sha256(json.dumps(declared, sort_keys=True).encode()).hexdigest()

    def pins(self) -> dict[str, str]:
        """Distribution name (normalised) -> pinned version, for every ``==`` requirement and torch."""
        pins = {}
        for req in (*self.requirements, *self.no_deps, *(b.requirement for b in self.source_builds)):
            if "==" in req:
                name, version = req.split("==", 1)
                pins[_norm(name)] = version.strip()
        if self.torch:
            pins["torch"] = self.torch
        return pins


@dataclass(frozen=True)
class EnvironmentState:
    """An environment as found on disk."""

    name: str
    path: Path
    exists: bool
    complete: bool
    problems: tuple[str, ...] = ()
    python: str = ""
    packages: Mapping[str, str] = field(default_factory=dict)  # every distribution installed -> version

    @property
    def python_exe(self) -> Path:
        return self.path / "bin" / "python"

    def packages_digest(self) -> str:
        lines = "".join(f"{n}=={v}\n" for n, v in sorted(self.packages.items()))
        return hashlib.sha256(f"python {self.python}\n{lines}".encode()).hexdigest()

    def how_to_fix(self) -> str:
        return f"run `chipfit toolchain install {self.name}`"

    def source(self, name: str) -> Path:
        """The unpacked source tree of a `SourceBuild` named ``name``."""
        return self.path / "src" / _norm(name)


def toolchains_dir() -> Path:
    """``$CHIPFIT_TOOLCHAINS_DIR``, else ``<chipfit cache dir>/toolchains``."""
    if os.environ.get(TOOLCHAINS_ENV):
        return Path(os.environ[TOOLCHAINS_ENV])
    return default_cache_dir() / "toolchains"


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(".", "-")


def _site_packages(path: Path) -> list[Path]:
    return sorted(path.glob("lib/python3*/site-packages"))


def _python_version(path: Path) -> str:
    cfg = path / "pyvenv.cfg"
    if not cfg.is_file():
        return ""
    for line in cfg.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() in ("version", "version_info"):
            return value.strip()
    return ""


def inspect_environment(env: Environment, root: Path | None = None) -> EnvironmentState:
    """What is installed for ``env`` under ``root``, read from its metadata (nothing in it is run)."""
    path = (root or toolchains_dir()) / env.name
    if not (path / "bin" / "python").exists():
        return EnvironmentState(env.name, path, False, False, ("not installed",))
    packages = {}
    for dist in metadata.distributions(path=[str(p) for p in _site_packages(path)]):
        name = dist.metadata["Name"]
        if name:
            packages[_norm(name)] = dist.version
    problems = []
    marker = path / MARKER
    if not marker.is_file():
        problems.append("its install did not finish")
    else:
        try:
            recorded = json.loads(marker.read_text()).get("declaration_digest")
        except ValueError:
            recorded = None
        if recorded != env.digest():
            problems.append("the backend's declared environment changed since it was installed")
    for build in env.source_builds:
        if build.unpack and not (path / "src" / _norm(build.name)).is_dir():
            problems.append(f"{build.name}'s source tree is missing")
    for name, version in env.pins().items():
        have = packages.get(name)
        if have is None:
            problems.append(f"{name} is missing")
        elif have.split("+")[0] != version.split("+")[0]:
            problems.append(f"{name} is {have}, the backend pins {version}")
    return EnvironmentState(env.name, path, True, not problems, tuple(problems), _python_version(path),
                            dict(sorted(packages.items())))


def install_environment(env: Environment, root: Path | None = None, force: bool = False,
                        progress: Callable[[str], None] = lambda m: None) -> EnvironmentState:
    """Make ``env`` under ``root`` (from registry wheels only); a complete one is kept unless ``force``."""
    root = root or toolchains_dir()
    state = inspect_environment(env, root)
    if state.complete and not force:
        progress(f"{env.name}: already complete at {state.path}")
        return state
    if state.path.exists():
        shutil.rmtree(state.path)  # an incomplete or stale environment is made again from scratch
    root.mkdir(parents=True, exist_ok=True)
    path = state.path
    started = time.perf_counter()
    progress(f"{env.name}: creating a virtual environment at {path}")
    _step([sys.executable, "-m", "venv", str(path)], root / f"{env.name}.{INSTALL_LOG}", "create the venv")
    log = path / INSTALL_LOG
    (root / f"{env.name}.{INSTALL_LOG}").replace(log)
    pip = [str(path / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "--only-binary=:all:"]
    if env.torch:
        progress(f"{env.name}: installing torch=={env.torch} (the CPU wheel)")
        _step([*pip, f"torch=={env.torch}"], log, f"install torch=={env.torch}")
    if env.requirements:
        progress(f"{env.name}: installing {len(env.requirements)} pinned requirements")
        pinned_torch = [f"torch=={env.torch}"] if env.torch else []  # keeps pip from replacing the CPU wheel
        _step([*pip, *env.requirements, *pinned_torch], log, "install the requirements")
    for build in env.source_builds:
        wheel, sdist = _source_wheel(build, root, log, progress)
        progress(f"{env.name}: installing {wheel.name}")
        _step([*pip, str(wheel)], log, f"install {wheel.name}")
        if build.unpack:
            _unpack(sdist, path / "src" / _norm(build.name))
    if env.no_deps:
        progress(f"{env.name}: installing {', '.join(env.no_deps)} without their dependencies")
        _step([*pip, "--no-deps", *env.no_deps], log, "install the --no-deps packages")
    if env.check:
        progress(f"{env.name}: checking it works ({env.check})")
        _step([str(path / "bin" / "python"), "-c", env.check], log, f"run {env.check!r} in it")
    state = inspect_environment(_write_marker(env, path), root)
    if not state.complete:
        raise ToolchainInstallError(f"{env.name}: installed, but {'; '.join(state.problems)} (log: {log})")
    progress(f"{env.name}: complete in {time.perf_counter() - started:.0f} s")
    return state


def wheel_dir(build: SourceBuild, root: Path) -> Path:
    """Where the wheel of ``build`` compiled on this machine is kept: keyed by the build, Python and the CPU."""
    from targets.host import detect_host

    host = detect_host()
    key = hashlib.sha256(json.dumps({"requirement": build.requirement, "build_env": build.build_env,
                                     "python": sys.version_info[:2], "arch": host.arch, "cpu": host.model_name,
                                     "flags": sorted(host.flags)}, sort_keys=True).encode()).hexdigest()[:16]
    return root / ".wheels" / f"{_norm(build.name)}-{key}"


def _source_wheel(build: SourceBuild, root: Path, log: Path, progress: Callable[[str], None]) -> tuple[Path, Path]:
    """The wheel of ``build`` for this machine (and its sdist): from ``<root>/.wheels/<key>/`` where an earlier
    install left it, else downloaded and compiled now (minutes) and kept there."""
    cached = wheel_dir(build, root)
    wheels, sdists = sorted(cached.glob("*.whl")), sorted(cached.glob("*.tar.gz"))
    if wheels and sdists:
        progress(f"{build.name}: the wheel built on this machine earlier ({wheels[0].name}, {cached})")
        return wheels[0], sdists[0]
    cached.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"{cached.name}.", dir=cached.parent))
    try:
        progress(f"{build.name}: downloading its source distribution")
        _step([sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-deps",
               "--no-binary", ":all:", build.requirement, "-d", str(scratch)], log, f"download {build.requirement}")
        (sdist,) = scratch.glob("*.tar.gz")
        started = time.perf_counter()
        progress(f"{build.name}: compiling a wheel for this machine (minutes; kept in {cached.parent} for later "
                 "installs)")
        _step([sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "--no-deps", "-w", str(scratch),
               str(sdist)], log, f"build {build.requirement} from source",
              extra_env={"CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 1), **dict(build.build_env)})
        progress(f"{build.name}: compiled in {time.perf_counter() - started:.0f} s")
        shutil.rmtree(cached, ignore_errors=True)
        scratch.replace(cached)  # whole or not at all: an interrupted build leaves only its scratch folder
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return sorted(cached.glob("*.whl"))[0], sorted(cached.glob("*.tar.gz"))[0]


def _unpack(sdist: Path, dest: Path) -> None:
    """The sdist's tree as ``dest`` (its single top folder's contents)."""
    scratch = Path(tempfile.mkdtemp(dir=dest.parent if dest.parent.exists() else None))
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(sdist) as tar:
            tar.extractall(scratch, filter="data")
        (top,) = [p for p in scratch.iterdir() if p.is_dir()]
        shutil.rmtree(dest, ignore_errors=True)
        top.replace(dest)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _write_marker(env: Environment, path: Path) -> Environment:
    """Write the record that the install finished, for the declaration ``env``."""
    (path / MARKER).write_text(json.dumps({"declaration": asdict(env), "declaration_digest": env.digest(),
                                           "python": sys.version.split()[0]}, indent=2) + "\n")
    return env


def _step(command: list[str], log: Path, what: str, extra_env: Mapping[str, str] | None = None) -> None:
    with log.open("a") as out:
        out.write(f"$ {' '.join(command)}\n")
        out.flush()
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env={**clean_env(), **(extra_env or {})})
    if done.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        raise ToolchainInstallError(f"could not {what} (exit {done.returncode}); the end of {log}:\n{tail}")


def clean_env() -> dict[str, str]:
    """chipfit's own PYTHONPATH (a plugin folder, a worktree) must not leak into another interpreter."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
