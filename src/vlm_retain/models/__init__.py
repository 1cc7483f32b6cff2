"""Model families, loading, tiny offline models and the shared input encoding.

Submodules (import the one you need; only ``registry`` is imported here, so this package stays
cheap to import without torch/transformers):

- :mod:`~vlm_retain.models.registry`: ``Family``, ``FAMILIES``, ``detect_family``,
  ``module_groups``, LoRA target presets.
- :mod:`~vlm_retain.models.loading`: ``load_model`` -> ``LoadedModel`` (offline, safetensors,
  dtype/attention per device, optional PEFT adapter), ``batch_to``.
- :mod:`~vlm_retain.models.encoding`: ``encode`` (images + prompts [+ answers] -> tensors and
  labels), used by generation, scoring and training alike.
- :mod:`~vlm_retain.models.processor`: torchvision-free processors, ``load_processor``.
- :mod:`~vlm_retain.models.tokenizer`: the offline multilingual BPE ``build_tokenizer``.
- :mod:`~vlm_retain.models.tiny`: ``build_tiny`` random models of the real architectures.
"""

from vlm_retain.models.registry import (
    COMPONENTS,
    FAMILIES,
    Family,
    detect_family,
    get_family,
    module_groups,
)

__all__ = ["COMPONENTS", "FAMILIES", "Family", "detect_family", "get_family", "module_groups"]
