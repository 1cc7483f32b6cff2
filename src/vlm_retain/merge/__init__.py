"""Weight-space merging and sweeps: WiSE-FT, task arithmetic, TIES, DARE.

Modules, one job each:

- :mod:`~vlm_retain.merge.methods`: the arithmetic on ``{name: tensor}`` dicts (pure torch);
- :mod:`~vlm_retain.merge.checkpoint`: safetensors shards, side files, hashes;
- :mod:`~vlm_retain.merge.lora`: PEFT LoRA adapters as data (deltas, scaling, writing);
- :mod:`~vlm_retain.merge.inputs`: input checks (adapter vs base, shapes) and input records;
- :mod:`~vlm_retain.merge.output`: staged outputs with ``merge.json``, full-model saving;
- :mod:`~vlm_retain.merge.wise_ft`: ``wise_ft_models``, ``wise_ft_adapter``;
- :mod:`~vlm_retain.merge.combine`: ``merge_inputs`` (linear, ties, dare);
- :mod:`~vlm_retain.merge.sweep`: the WiSE-FT sweep (build, evaluate, ``choose_point``);
- :mod:`~vlm_retain.merge.plot`: the Pareto plot of a sweep.

Nothing heavy is imported here, so the CLI stays quick to start.
"""
