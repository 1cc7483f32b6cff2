"""The frozen base model that the KL term compares against, at the lowest memory cost.

Why not always a second model: for LoRA/DoRA the base weights are already in memory, frozen,
and PEFT's ``disable_adapter()`` runs them without the adapter (and with the original copies of
``modules_to_save``), so the reference costs one extra forward and no memory (ms-swift GKD and
TRL SDFT do this; LLaMA-Factory's ASFT keeps a full copy and, for Qwen2.5-VL, drops the pixels
from the reference forward, methods.md §1.2). Full or selective tuning changes the base weights
in place, so there the reference must be a frozen deep copy made *before the first update*:
its memory cost is one more copy of the whole model (weights only: no gradients, no optimizer
state; 7B in bf16 is about 16 GB).

The reference always receives the full multimodal input (``pixel_values``, ``image_grid_thw``,
``mm_token_type_ids``, ``attention_mask``, ``token_type_ids``, ``position_ids``...): whatever
:func:`~vlm_retain.train.objectives.model_inputs` keeps, i.e. everything the trained model gets.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any


class ReferenceModel:
    """Computes the base model's logits for a batch under ``torch.no_grad`` in eval mode.

    ``ReferenceModel(model)`` decides by itself: a PEFT model -> adapter disabled on the same
    weights (``owns_copy`` False); anything else -> a frozen deep copy it owns. Build it right
    after :func:`~vlm_retain.train.presets.apply_tuning`, before any optimizer step.
    """

    def __init__(self, model: Any, *, share_weights: bool | None = None) -> None:
        self.rows_skipped = 0  # batch rows left out of reference forwards (nothing selected)
        peft = hasattr(model, "disable_adapter") and hasattr(model, "peft_config")
        self.share_weights = peft if share_weights is None else share_weights
        if self.share_weights and not peft:
            raise ValueError("share_weights needs a PEFT model (adapter disabled = base)")
        if self.share_weights:
            self.model = model
        else:
            self.model = copy.deepcopy(model)
            for param in self.model.parameters():
                param.requires_grad_(False)
            self.model.eval()

    @property
    def owns_copy(self) -> bool:
        return not self.share_weights

    def memory_bytes(self) -> int:
        """Extra memory this reference holds (0 when it shares the trained model's weights)."""
        if self.share_weights:
            return 0
        return sum(p.numel() * p.element_size() for p in self.model.parameters())

    def logits(self, inputs: Mapping[str, Any], positions: Any | None = None) -> Any:
        """Base logits: ``(B, T, V)``, or ``(N, V)`` at the True cells of ``positions`` (B, T).

        With ``positions`` the model is asked for those logits only (transformers'
        ``logits_to_keep`` with a boolean mask, see :mod:`~vlm_retain.train.positions`), so a
        150k vocabulary costs ``N x V`` rather than ``B x T x V``; models without that argument
        compute full logits and the positions are taken from them. Rows without a selected
        position are left out of the forward where the batch layout allows it
        (:func:`~vlm_retain.train.batch_rows.select_rows`): KL on replay rows then costs only
        their share of a batch.
        """
        import torch

        from vlm_retain.train.batch_rows import select_rows
        from vlm_retain.train.positions import supports_kept_logits

        # no KV cache: nothing decodes after this forward (and a cache's per-layer state makes a
        # compiled decoder layer recompile once per layer)
        if hasattr(getattr(self.model, "config", None), "use_cache"):
            inputs = {**inputs, "use_cache": False}
        with torch.no_grad(), self._base_mode():
            if positions is None:
                return self.model(**inputs).logits
            rows = positions.any(dim=1)
            if not bool(rows.all()):
                subset = select_rows(inputs, rows)
                if subset is not None:
                    inputs, positions = subset, positions[rows.to(positions.device)]
                    self.rows_skipped += int((~rows).sum())
            if supports_kept_logits(self.model):
                return self.model(**inputs, logits_to_keep=positions).logits
            return self.model(**inputs).logits[positions]

    @contextmanager
    def _base_mode(self) -> Iterator[None]:
        """Eval mode (no dropout) and, when sharing weights, the adapter disabled; restores the
        per-module training flags afterwards (a frozen ViT kept in eval stays in eval)."""
        flags = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        try:
            if self.share_weights:
                with self.model.disable_adapter():
                    yield
            else:
                yield
        finally:
            for module, training in flags:
                module.training = training
