"""Training building blocks: what trains (tuning presets) and what it is trained for (objectives).

Import the submodule you need; nothing heavy is imported here, so the CLI stays fast.

- :mod:`~vlm_retain.train.presets`: ``TuningSpec`` (``"lora"``, ``"llm-attn+projector"``...),
  ``apply_tuning`` -> ``TunedModel`` (sets ``requires_grad``, wraps with PEFT when needed).
- :mod:`~vlm_retain.train.groups`: ``param_groups`` (per-component learning rates) and
  ``trainable_summary``.
- :mod:`~vlm_retain.train.objectives`: the ``Objective`` protocol, ``CrossEntropy``,
  ``combine``, ``model_inputs``; re-exports ``KLToBase``, ``L2SP``, ``EWC``.
- :mod:`~vlm_retain.train.reference`: ``ReferenceModel`` (the frozen base for the KL term:
  adapter disabled for PEFT, a frozen copy otherwise).
- :mod:`~vlm_retain.train.kl`: ``KLToBase`` and the chunked / top-k KL kernel.
- :mod:`~vlm_retain.train.anchors`: ``L2SP`` and ``EWC`` (distance from the starting weights).
- :mod:`~vlm_retain.train.deltas`: effective weight deltas (LoRA ``B@A*scaling``, DoRA), and
  PEFT-to-base parameter names.
- :mod:`~vlm_retain.train.fisher`: diagonal Fisher estimation and its on-disk cache.

docs/training-strategies.md explains when to use each and what it costs.
"""
