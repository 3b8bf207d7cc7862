"""Isolated backends: a vendor SDK in its own virtual environment, reached across a process boundary.

``environment`` (what a backend declares, installing and inspecting it: ``chipfit toolchain install/list``),
``handoff`` (the folder of files and the subprocess with its timeout), ``child`` (the launcher run inside the
environment; standard library only), ``backend`` (`IsolatedBackend`, the base class a vendor subclasses).
The contract is documented in docs/plugins.md; examples/rknn-plugin/ is its worked example.
"""

from compiler.isolated.backend import SDK, IsolatedBackend, IsolatedRunner, isolated_capabilities
from compiler.isolated.environment import (Environment, EnvironmentState, ToolchainInstallError,
                                           inspect_environment, install_environment, toolchains_dir)

__all__ = ["SDK", "Environment", "EnvironmentState", "IsolatedBackend", "IsolatedRunner", "ToolchainInstallError",
           "inspect_environment", "install_environment", "isolated_capabilities", "toolchains_dir"]
