"""Generating with a GGUF artifact through llama.cpp (llama-cpp-python), in a child process of its environment.

`LlamaCppRunner` is chipfit's `DecoderRunner` for it: greedy tokens with the time of every step (measured in the
child, so the pipe costs nothing in the figures), teacher-forced logits, and llama.cpp's tokenizer. The child is
`runtime.py` run by the environment's Python; it ends when the runner is collected or closed. Given a vision
part (`VisionPart`: the mmproj file and the image-token bounds), it is also a `compiler.vlm.verify.VisionRunner`:
prompts with images, their features, teacher-forced logits after them.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import weakref
from pathlib import Path
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from compiler.errors import RunError
from compiler.isolated.environment import clean_env
from targets.backend import Generation
from targets.vision import IMAGE_PLACEHOLDER

RUNTIME = Path(__file__).with_name("runtime.py")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        try:
            process.stdin.write('{"op": "quit"}\n')
            process.stdin.flush()
            process.wait(timeout=10)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            process.kill()


@dataclass(frozen=True)
class VisionPart:
    mmproj: Path
    min_tokens: int  # the model's processor's bounds on an image's tokens (0: llama.cpp's own for the family)
    max_tokens: int
    image_token: int  # the id transformers' prompt holds for each image token
    marker: str = "<__media__>"  # what stands for an image in mtmd's prompt (its media marker, with the family's text)
    add_special: bool = False  # mtmd adds the tokenizer's specials (a BOS) to the prompt


class LlamaCppRunner:
    def __init__(self, python: Path, gguf: Path, context: int, threads: int, cache_type: str = "F16",
                 vision: VisionPart | None = None) -> None:
        self._python, self._gguf, self._context, self._cache_type = python, gguf, context, cache_type
        self.vision = vision
        self._start(threads)

    def _start(self, threads: int) -> None:
        self.threads = threads
        self._process = subprocess.Popen(
            [str(self._python), str(RUNTIME), "serve", str(self._gguf), str(self._context), str(threads),
             self._cache_type]
            + ([str(self.vision.mmproj), str(self.vision.min_tokens), str(self.vision.max_tokens)] if self.vision else []),
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
                            f"{self._cache_type} KV cache" + (", mtmd for images)" if self.vision else ")"))

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

    def detokenize(self, ids: Sequence[int]) -> str:
        return str(self._call(op="detokenize", ids=[int(i) for i in ids])["text"])

    # -- prompts with images ----------------------------------------------------------------------------------
    def _with_images(self, op: str, prompt: str, pixels: Sequence[np.ndarray], scratch: str, **request) -> dict:
        """One request whose images travel as .npy files in ``scratch`` and whose prompt marks them mtmd's way."""
        if self.vision is None:
            raise RunError(f"{self._gguf.name} was loaded without its vision part")
        files = []
        for i, image in enumerate(pixels):
            files.append(str(Path(scratch) / f"image{i}.npy"))
            np.save(files[-1], np.ascontiguousarray(image, dtype=np.uint8))
        text = prompt.replace(IMAGE_PLACEHOLDER, self.vision.marker)
        return self._call(op=op, prompt=text, images=files, add_special=self.vision.add_special, **request)

    def prompt_ids(self, prompt: str, pixels: Sequence[np.ndarray]) -> list[int]:
        with tempfile.TemporaryDirectory(prefix="chipfit-llamacpp-") as scratch:
            reply = self._with_images("prompt_ids", prompt, pixels, scratch,
                                      image_token=self.vision.image_token if self.vision else 0)
        return [int(i) for i in reply["ids"]]

    def generate_images(self, prompt: str, pixels: Sequence[np.ndarray], new_tokens: int, stop: Sequence[int] = (),
                        on_token: Callable[[int], None] | None = None) -> Generation:
        with tempfile.TemporaryDirectory(prefix="chipfit-llamacpp-") as scratch:
            reply = self._with_images("generate_images", prompt, pixels, scratch, n=int(new_tokens),
                                      stop=[int(s) for s in stop])
        tokens = tuple(int(t) for t in reply["tokens"])
        if on_token is not None:
            for token in tokens:
                on_token(token)
        return Generation(tokens, float(reply["prefill_s"]), tuple(float(t) for t in reply["token_s"]),
                          float(reply["encode_s"]))

    def image_logits(self, prompt: str, pixels: Sequence[np.ndarray], forced: Sequence[int]) -> np.ndarray:
        with tempfile.TemporaryDirectory(prefix="chipfit-llamacpp-") as scratch:
            out = Path(scratch) / "logits.npy"
            self._with_images("image_logits", prompt, pixels, scratch, forced=[int(t) for t in forced], out=str(out))
            return np.load(out, allow_pickle=False)

    def image_features(self, pixels: np.ndarray) -> np.ndarray:
        with tempfile.TemporaryDirectory(prefix="chipfit-llamacpp-") as scratch:
            image, out = Path(scratch) / "image.npy", Path(scratch) / "features.npy"
            np.save(image, np.ascontiguousarray(pixels, dtype=np.uint8))
            self._call(op="image_features", image=str(image), out=str(out))
            return np.load(out, allow_pickle=False)
