"""The transformers model under the wrappers training puts around it.

Why one helper: the trainer, the vision cache, packing, compilation and the answer-only logits
check all need the plain transformers model (its ``config``, ``get_image_features``,
``get_rope_index``, decoder layers or modeling module) while holding a model that accelerate
may have wrapped for data parallelism (``DistributedDataParallel`` / DeepSpeed: ``.module``)
around PEFT's ``PeftModel`` (``get_base_model()``). Unwrapping in one order in one place keeps
them from disagreeing (DDP around PEFT must be peeled outside-in).
"""

from __future__ import annotations

from typing import Any


def unwrap(model: Any) -> Any:
    """``model`` without data-parallel wrappers (outermost) and without PEFT's wrapper."""
    try:
        from accelerate.utils import extract_model_from_parallel
    except ImportError:  # the GPU bench may run where only torch, transformers and peft are
        while hasattr(model, "module") and not hasattr(model, "config"):
            model = model.module  # DDP
    else:  # DDP, DeepSpeed (whose engine forwards attributes such as config), FSDP
        model = extract_model_from_parallel(model, keep_torch_compile=True)
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model
