"""``torch.compile`` of the language model's decoder layers, one layer at a time.

Why regional: compiling the whole VLM forward breaks its graph at every data-dependent step
(image token scatter, multimodal rotary index, PEFT's adapter dispatch) and recompiles for
each new batch shape; the decoder layers are where the time goes (about 4N FLOPs per token for
LoRA, N the parameter count) and they are all alike, so compiling each layer's forward gives
the fused kernels (RMSNorm, SwiGLU, rotary, LoRA's add) for one compilation reused by every
layer. The vision tower, the embeddings and the head run eagerly.

Numerics: inductor fuses and reorders floating-point operations, so losses and gradients agree
with eager mode up to rounding, not bit for bit (a test checks the tolerance on a tiny model).
The first steps pay the compilation (seconds to minutes); later batch shapes may recompile
(``dynamic=None`` lets torch mark the varying sequence length dynamic after the first change).
``train.compile: auto`` (the default) compiles on CUDA only (:func:`compile_for_run`).
"""

from __future__ import annotations

from typing import Any

from vlm_retain.errors import InputError
from vlm_retain.models.unwrap import unwrap


def decoder_layers(model: Any, family: Any) -> list[Any]:
    """The language model's decoder layers (``<llm path>.layers``) under PEFT / DDP wrappers."""
    base = unwrap(model)
    path = family.module_paths.get("llm")
    try:
        llm = base.get_submodule(path) if path else None
    except AttributeError:
        llm = None
    layers = getattr(llm, "layers", None)
    if layers is None or len(layers) == 0:
        raise InputError(
            f"train.compile: no decoder layers found for {family.title}",
            field="train.compile",
            hint="set train.compile: off",
        )
    return list(layers)


def compile_layers(model: Any, family: Any) -> int:
    """Compile each decoder layer in place (``nn.Module.compile``); the number compiled."""
    layers = decoder_layers(model, family)
    for layer in layers:
        layer.compile()
    return len(layers)


def compile_for_run(setting: str, model: Any, family: Any, device: Any) -> int:
    """Apply ``train.compile`` to a run's model; the number of layers compiled (0: eager).

    ``auto`` compiles on CUDA only: there the compiled step matched the eager one within bf16
    tolerance (tests/test_cuda_equivalence.py, run on an H200) and ran a third faster
    (benchmarks/results/gpu-h200-2026-11-28-*.json); on CPU it is not bit-exact and the
    compilation costs more than it saves on short runs. Under ``auto`` a layer that fails to
    compile runs eagerly (dynamo's ``suppress_errors``) rather than stopping the run; ``on``
    lets such an error through.
    """
    if setting == "off" or (setting == "auto" and getattr(device, "type", device) != "cuda"):
        return 0
    import torch._dynamo

    torch._dynamo.config.suppress_errors = setting == "auto"  # per run: a process may run several
    return compile_layers(model, family)


def uncompile_layers(model: Any, family: Any) -> None:
    """Back to eager mode (the benchmark compiles one case and not the next)."""
    for layer in decoder_layers(model, family):
        layer._compiled_call_impl = None
