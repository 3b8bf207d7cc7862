"""Front ends: turn a model file, the bundled example or an `nn.Module` into a `TracedModel`.

`load_model` decides by what it is given:

* ``"example"``: the bundled digits network (works offline, no file needed);
* ``*.pt2``: a `torch.export.save` archive;
* ``*.onnx``: an ONNX file (checked, shapes inferred, external data kept inside its folder);
* a folder: a Hugging Face decoder LM as ``save_pretrained`` writes it (`compiler.frontend.huggingface`), or any
  other Hugging Face model (an encoder, a vision or speech model), exported by optimum for its task in optimum's
  own environment (`compiler.frontend.optimum`);
* ``*.pt``, ``*.pth``, ``*.bin``, ``*.ckpt``: refused, never unpickled.

`trace_module` does the same for an in-memory module with example inputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from compiler.errors import UsageError
from compiler.passes.graph import copy_model
from targets.signature import TensorSpec
from targets.model import TracedModel

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")


def is_decoder_folder(path: str | Path) -> bool:
    """A Hugging Face folder read as a decoder LM (or a vision-language model); other folders are exported."""
    from compiler.frontend.huggingface import is_decoder_config, read_config

    return Path(path).is_dir() and is_decoder_config(read_config(Path(path)))


def load_model(source: str | Path, inputs: Iterable[TensorSpec] = (), trust_remote_code: bool = False,
               task: str | None = None):
    """A `TracedModel` (``.pt2``, ``.onnx``, the example, an exported Hugging Face folder), or a `DecoderModel`
    for a Hugging Face decoder LM folder."""
    inputs = list(inputs)
    if str(source) == "example":
        from compiler.frontend.example import trace_example

        return trace_example(inputs)
    path = Path(source)
    if task and not path.is_dir():
        raise UsageError(f"--task {task}: {path} is no Hugging Face model folder; --task chooses what optimum exports "
                         "a folder for")
    if path.is_dir() and (task is None or task == "text-generation") and is_decoder_folder(path):
        from compiler.frontend.huggingface import load_hf_directory

        if inputs:
            raise UsageError(f"--input: {path} is a model folder (a decoder LM); its inputs are token ids")
        return load_hf_directory(path, trust_remote_code)
    if path.is_dir():
        from compiler.frontend.optimum import load_exported

        return load_exported(path, task, inputs, trust_remote_code)
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise UsageError(
            f"{path}: {suffix} files are pickled checkpoints, which chipfit never unpickles (they can run "
            "arbitrary code). Export the model instead: `ep = torch.export.export(model, example_inputs)` then "
            f"`torch.export.save(ep, '{path.with_suffix('.pt2').name}')`, or `torch.onnx.export(..., dynamo=True)`."
        )
    if not path.exists():
        raise UsageError(f"{path}: no such file (MODEL is a .pt2 file, an .onnx file, a Hugging Face model folder, "
                         "or 'example')")
    if suffix == ".pt2":
        from compiler.frontend.pytorch import load_pt2

        return load_pt2(path, inputs)
    if suffix == ".onnx":
        from compiler.frontend.onnx_file import load_onnx

        return load_onnx(path, inputs)
    raise UsageError(f"{path}: unknown model format {suffix or '(no suffix)'!r}; chipfit reads .pt2 and .onnx files "
                     "and Hugging Face model folders")


def signature_of(source: str | Path, inputs: Iterable[str] = (), task: str | None = None):
    """A model's inputs and outputs, without the full front end where it is not needed (for checking data
    files while planning): ONNX from the file, ``.pt2`` from the exported program's placeholders."""
    from targets.signature import parse_input_override

    overrides = [parse_input_override(text) for text in inputs]
    path = Path(source)
    if str(source) != "example" and path.suffix.lower() == ".pt2":
        from compiler.frontend.pytorch import pt2_signature

        return pt2_signature(path, overrides)
    return load_model(source, overrides, task=task).signature


def concretize(model: TracedModel) -> TracedModel:
    """The model at static shapes (every symbolic dim bound to 1), its signature, ONNX graph and torch program
    agreeing: for backends that take static shapes only. The program is re-exported once, here."""
    if model.signature.is_static:
        return model
    from dataclasses import replace

    from compiler.frontend.onnx_file import fix_dims
    from targets.signature import dim_bindings

    static = model.signature.concretized()
    graph = copy_model(model.onnx_model)
    fix_dims(graph, dim_bindings(model.signature, static))
    program = model.exported_program
    if program is not None:
        from compiler.frontend.pytorch import static_program

        program = static_program(program, static)
    return replace(model, signature=static, onnx_model=graph, exported_program=program)


def trace_module(module, example_inputs, **kwargs) -> TracedModel:
    """Trace an in-memory `torch.nn.Module`; see `compiler.frontend.pytorch.trace_module`."""
    from compiler.frontend.pytorch import trace_module as trace

    return trace(module, example_inputs, **kwargs)


__all__ = ["concretize", "is_decoder_folder", "load_model", "trace_module", "TracedModel"]
