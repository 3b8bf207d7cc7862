"""``chipfit generate``: a decoder LM artifact generates text, streamed, with its rates; a vision-language artifact
from images too (``--image``, one ``<image>`` in the prompt for each), sized as the model's processor sizes them."""

from __future__ import annotations

import argparse
import sys

from compiler.errors import UsageError



def host_arch() -> str:
    from targets.host import detect_host

    return detect_host().arch



def cmd_generate(args: argparse.Namespace) -> int:
    from targets.host import detect_host
    from targets.manifest import read_artifact
    from targets.registry import backend_registry, target_registry

    if args.max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens {args.max_new_tokens}: must be at least 1")
    artifact = read_artifact(args.path)
    m = artifact.manifest
    if m.llm is None:
        raise UsageError(f"{args.path}: not a language model artifact (built from {m.model.source_kind} "
                         f"{m.model.source}); `chipfit generate` takes a decoder LM built from a model folder")
    problems = artifact.file_problems()
    if problems:
        raise UsageError(f"{args.path}: refusing to run a modified artifact: {'; '.join(problems)}")
    target = target_registry().get(m.target.id)
    pixels = _images(args, m)
    plan = backend_registry().get(m.backend.name).plan_generate(artifact.path, m.backend.options, target, detect_host())
    encode, decode = _tokenizer(artifact, plan.runner)
    ids = encode(args.prompt)
    if not ids:
        raise UsageError("--prompt: it encodes to no tokens")
    if pixels:
        ids = plan.runner.prompt_ids(args.prompt, pixels)
    if len(ids) + args.max_new_tokens > m.llm.context:
        raise UsageError(f"--max-new-tokens {args.max_new_tokens}: the prompt ({len(ids)} tokens"
                         + (f" with {len(pixels)} image(s)" if pixels else "")
                         + f") and the new tokens exceed the artifact's context of {m.llm.context}")
    if plan.note:
        print(f"note: {plan.note}", file=sys.stderr)
    eos = m.llm.generation.get("eos_token_id")
    stop = tuple(eos) if isinstance(eos, list) else ((eos,) if isinstance(eos, int) else ())
    made: list[int] = []
    shown = ""
    sys.stdout.write(args.prompt)

    def stream(token: int) -> None:
        nonlocal shown
        made.append(token)
        text = decode(made)
        if not text.endswith("\ufffd"):  # a character split across tokens waits for its last byte
            sys.stdout.write(text[len(shown):])
            sys.stdout.flush()
            shown = text

    stops = () if args.ignore_eos else stop
    if pixels:
        result = plan.runner.generate_images(args.prompt, pixels, args.max_new_tokens, stops, on_token=stream)
    else:
        result = plan.runner.generate(ids, args.max_new_tokens, stop=stops, on_token=stream)
    sys.stdout.write("\n")
    sys.stdout.flush()
    decode_s = sum(result.token_s)
    rate = f"{len(result.token_s) / decode_s:.1f} tok/s" if decode_s > 0 else "-"
    print(f"{len(result.tokens)} tokens; prompt {len(ids)} tokens"
          + (f" ({len(pixels)} image(s), encoded in {result.encode_s * 1e3:.1f} ms)" if pixels else "")
          + f", time to first token {result.prefill_s * 1e3:.1f} ms, decode {rate} ({plan.runner.description})",
          file=sys.stderr)
    return 0


def _tokenizer(artifact, runner):
    """The artifact's tokenizer: its tokenizer.json, else the runtime's own (a GGUF carries its tokenizer)."""
    from tokenizers import Tokenizer

    file = next((artifact.path / f for f in artifact.manifest.llm.tokenizer_files if f.endswith("tokenizer.json")),
                None)
    if file is not None:
        tokenizer = Tokenizer.from_file(str(file))
        return (lambda text: list(tokenizer.encode(text).ids)), tokenizer.decode
    if hasattr(runner, "tokenize") and hasattr(runner, "detokenize"):
        return runner.tokenize, runner.detokenize
    raise UsageError(f"{artifact.path}: the artifact holds no tokenizer.json and its runtime offers no tokenizer")


def _images(args: argparse.Namespace, m):
    """The ``--image`` files, read, counted against the prompt's placeholders and sized for the model; refused
    (exit 2, nothing run) where the artifact takes no images or the prompt does not mark them."""
    from compiler.vlm.families import fit_image, split_prompt
    from compiler.vlm.images import read_image
    from targets.vision import IMAGE_PLACEHOLDER

    vision = m.llm.vision
    if vision is None:
        if args.image:
            raise UsageError(f"--image: {args.path} is a text decoder ({m.llm.decoder.architecture}); it takes no "
                             "images. Build a vision-language model folder to generate from images")
        return []
    if not args.image and IMAGE_PLACEHOLDER not in args.prompt:
        return []
    split_prompt(args.prompt, len(args.image))
    most = max(1, m.llm.context // max(1, vision.image_tokens_per_image) - 1)
    if len(args.image) > most:
        raise UsageError(f"--image: {len(args.image)} images; the artifact's context of {m.llm.context} tokens holds "
                         f"at most {most} at up to {vision.image_tokens_per_image} tokens each beside the prompt")
    return [fit_image(read_image(path), vision.spec) for path in args.image]
