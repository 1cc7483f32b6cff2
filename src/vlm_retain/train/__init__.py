"""Training: what trains (tuning presets), what it is trained for (objectives), and the loop.

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
- :mod:`~vlm_retain.train.config`: ``RunConfig`` (pydantic), ``load_config``, ``save_resolved``.
- :mod:`~vlm_retain.train.mixture`: ``Sample``, token-budgeted replay, ``build_mixture``.
- :mod:`~vlm_retain.train.collate`: ``Collator`` (labels, source ids, replay flags) and
  ``plan_batches`` (modality blocks so multi-GPU jobs never hang).
- :mod:`~vlm_retain.train.trainer`: ``train(config, resume, overwrite, hooks)``, the
  accelerate loop from a config to ``RUN/final``.
- :mod:`~vlm_retain.train.checkpoint`: safetensors checkpoints, exact resume, the final save.
- :mod:`~vlm_retain.train.probe`: the general probe, KL drift, the retention floor.
- :mod:`~vlm_retain.train.callbacks`: ``train_log.jsonl``, console lines, trackers, parameter
  distance per component.

docs/training.md explains when to use each strategy, what it costs, and every config key.
"""
