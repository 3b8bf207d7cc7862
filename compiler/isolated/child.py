"""The launcher chipfit runs inside an isolated environment: ``python -I child.py SDK_SCRIPT REQUEST_DIR``.

It imports nothing of chipfit (the environment has no chipfit, and may hold another numpy or onnx): only the
standard library. It loads the backend's SDK script by its path, calls its ``main(request, folder)`` with the
request read from ``REQUEST_DIR/request.json``, and writes what it returns, or the exception it raised, to
``REQUEST_DIR/status.json``. A crash in the SDK (a segfault) leaves no status: faulthandler prints the
Python stack into the log, and chipfit reads the signal from the exit status.
"""

import faulthandler
import importlib.util
import json
import sys
import traceback
from pathlib import Path

STATUS_SCHEMA_VERSION = 1


def main(script: str, folder: str) -> int:
    faulthandler.enable()
    root = Path(folder)
    request = json.loads((root / "request.json").read_text())
    status = {"schema_version": STATUS_SCHEMA_VERSION, "ok": False}
    try:
        spec = importlib.util.spec_from_file_location("chipfit_sdk_script", script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        result = module.main(request, root)
        status.update(ok=True, **result)
    except BaseException as exc:  # the SDK's own failure is reported, whatever it raised
        status.update(error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
    sys.stdout.flush()
    sys.stderr.flush()
    (root / "status.json").write_text(json.dumps(status, indent=2, sort_keys=True) + "\n")
    return 0 if status["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
