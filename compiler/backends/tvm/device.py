"""Time a TVM artifact on a device reached through TVM's RPC tracker (the field's device-farm protocol).

The tracker hands out a device by key; the artifact's library is uploaded, loaded into a Relax VM
on the remote CPU and timed there with TVM's remote time evaluator. Every network step has a
timeout, so an unreachable tracker or a key no device serves is a clear error, not a hang.
"""

from __future__ import annotations

import socket
from pathlib import Path

from targets.backend import DeviceError, DeviceTiming
from targets.signature import Signature, seeded_inputs


class RpcError(DeviceError):
    """The tracker or device cannot be reached or used; the message says which and how."""


def _parse(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise RpcError(f"--rpc {address!r}: expected HOST:PORT of a TVM RPC tracker, e.g. 127.0.0.1:9190")
    return host, int(port)


def request_device(address: str, key: str, timeout_s: float = 10.0):
    """A remote session for ``key`` from the tracker at ``address``."""
    from tvm import rpc

    host, port = _parse(address)
    # TVM's own connect retries a refused connection for a minute; find out at once instead.
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        raise RpcError(f"no TVM RPC tracker at {address}: {exc}. Start one with "
                       f"`python -m tvm.exec.rpc_tracker --host {host} --port {port}`") from exc
    try:
        tracker = rpc.connect_tracker(host, port)
    except (OSError, RuntimeError) as exc:
        raise RpcError(f"no TVM RPC tracker at {address}: {exc}. Start one with "
                       f"`python -m tvm.exec.rpc_tracker --host {host} --port {port}`") from exc
    try:
        summary = tracker.summary()
        keys = sorted({k for k in summary.get("queue_info", {})})
        if key not in keys:
            raise RpcError(f"tracker {address} has no device registered with key {key!r} (keys: {keys or 'none'}). "
                           f"Register one with `python -m tvm.exec.rpc_server --tracker {address} --key {key}`")
        tracker._sock.settimeout(timeout_s)  # TrackerSession has no timeout of its own: request() waits forever
        try:
            return tracker.request(key, priority=1, session_timeout=0, max_retry=1)
        except (RuntimeError, socket.timeout, OSError) as exc:
            raise RpcError(f"tracker {address} gave no free {key!r} device within {timeout_s} s: {exc}") from exc
    finally:
        tracker.close()


def time_remote(library: Path, signature: Signature, address: str, key: str, *, runs: int = 100,
                timeout_s: float = 10.0) -> DeviceTiming:
    """Upload ``library``, run it once, then time it with TVM's remote time evaluator (``runs`` calls)."""
    import tvm
    from tvm import relax

    remote = request_device(address, key, timeout_s)
    remote.upload(str(library))
    module = remote.load_module(library.name)
    device = remote.cpu()
    vm = relax.VirtualMachine(module, device)
    signature = signature.concretized()
    inputs = seeded_inputs(signature, seed=0, symbolic_size=1)
    args = [tvm.runtime.tensor(inputs[t.name], device) for t in signature.inputs]
    # A direct remote call of vm["main"] is not supported over RPC; the stateful interface is.
    vm.set_input("main", *args)
    vm.invoke_stateful("main")
    vm.get_outputs("main")
    repeat = 10  # samples: each the mean of `number` calls, so the device's noise shows between them
    number = max(1, runs // repeat)
    timer = vm.time_evaluator("invoke_stateful", device, number=number, repeat=repeat)
    report = timer("main")
    samples = tuple(float(r) * 1e3 for r in report.results)
    return DeviceTiming(samples, f"{key} via {address}",
                        f"TVM RPC time evaluator on {key} via {address} ({repeat} repeats of {number} calls)",
                        per_op_source="not offered over TVM RPC")
