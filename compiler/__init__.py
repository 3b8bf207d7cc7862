"""chipfit's compiler: front ends, passes, backends, the artifact format, the build driver and the CLI."""

from importlib import metadata

try:
    __version__ = metadata.version("chipfit")
except metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"
