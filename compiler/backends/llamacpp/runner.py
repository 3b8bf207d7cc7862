"""Generating with a GGUF artifact through llama.cpp (llama-cpp-python), in a child process of its environment.

`LlamaCppRunner` is chipfit's `DecoderRunner` for it: greedy tokens with the time of every step (measured in the
child, so the pipe costs nothing in the figures), teacher-forced logits, and llama.cpp's tokenizer. The child is
`runtime.py` run by the environment's Python; it ends when the runner is collected or closed.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import weakref
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from compiler.errors import RunError
from compiler.isolated.environment import clean_env
from targets.backend import Generation

RUNTIME = Path(__file__).with_name("runtime.py")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        try:
            process.stdin.write('{"op": "quit"}\n')
            process.stdin.flush()
            process.wait(timeout=10)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            process.kill()


class LlamaCppRunner:
    def __init__(self, python: Path, gguf: Path, context: int, threads: int, cache_type: str = "F16") -> None:
        self._python, self._gguf, self._context, self._cache_type = python, gguf, context, cache_type
        self._start(threads)

    def _start(self, threads: int) -> None:
        self.threads = threads
        self._process = subprocess.Popen(
            [str(self._python), str(RUNTIME), "serve", str(self._gguf), str(self._context), str(threads),
             self._cache_type],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env())
        self._finalizer = weakref.finalize(self, _stop, self._process)
        line = self._process.stdout.readline()
        if not line:
            error = self._process.stderr.read().strip().splitlines()[-3:]
            raise RunError(f"llama.cpp could not load {self._gguf.name}: {' | '.join(error) or 'no output'}")
        info = json.loads(line)
        self.vocab = int(info["vocab"])
        self.system = info["system"]
        self.description = (f"llama.cpp (llama-cpp-python {info['version']}, CPU backend, {threads} threads, "
                            f"{self._cache_type} KV cache)")

    def close(self) -> None:
        self._finalizer()

    def _call(self, **request) -> dict:
        try:
            self._process.stdin.write(json.dumps(request) + "\n")
            self._process.stdin.flush()
            line = self._process.stdout.readline()
        except OSError as exc:
            line = ""
        if not line:
            error = self._process.stderr.read().strip().splitlines()[-3:]
            raise RunError(f"llama.cpp stopped while running {self._gguf.name} "
                           f"(exit {self._process.poll()}): {' | '.join(error) or 'no output'}")
        reply = json.loads(line)
        if "error" in reply:
            raise RunError(f"llama.cpp: {reply['error']}")
        return reply

    def set_threads(self, threads: int) -> bool:
        self.close()
        self._start(threads)
        return True

    def generate(self, ids: Sequence[int], new_tokens: int, stop: Sequence[int] = (),
                 on_token: Callable[[int], None] | None = None) -> Generation:
        reply = self._call(op="generate", ids=[int(i) for i in ids], n=int(new_tokens), stop=[int(s) for s in stop])
        tokens = tuple(int(t) for t in reply["tokens"])
        if on_token is not None:  # the child makes the tokens in one call; they are handed on as it returns
            for token in tokens:
                on_token(token)
        return Generation(tokens, float(reply["prefill_s"]), tuple(float(t) for t in reply["token_s"]))

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        with tempfile.TemporaryDirectory(prefix="chipfit-llamacpp-") as scratch:
            out = Path(scratch) / "logits.npy"
            self._call(op="logits", ids=[int(i) for i in ids], out=str(out))
            return np.load(out, allow_pickle=False)

    def tokenize(self, text: str) -> list[int]:
        return [int(i) for i in self._call(op="tokenize", text=text)["ids"]]
