"""The training run config: pydantic models, YAML loading, ``--set`` overrides, the resolved form.

Why pydantic with ``extra="forbid"`` everywhere: a misspelt key (``replay_shar: 0.2``) must not
silently train without replay. Every unknown key is an error that names its path and the keys
allowed there, and every cross-field contradiction (replay share without replay data, KL on
replay batches with no replay, a retention floor with no probe to measure it, LoRA options with a
full-rank mode) is caught here, before a model or a dataset is loaded.

Sections (each documented on its class; every field carries its default and a description):

- ``model``: what to load (:class:`ModelConfig`);
- ``tuning``: what trains: ``full``, ``lora``, ``dora`` or a selective spec (:class:`TuningConfig`);
- ``data``: target manifests, replay sources and their share in tokens, self-replay, prompts,
  the pixel budget, eval data (:class:`DataConfig`);
- ``objectives``: CE, KL to the base, L2-SP, EWC, each with a weight (:class:`ObjectivesConfig`);
- ``probe``: the general-skill probe watched during training (:class:`ProbeConfig`);
- ``train``: the loop: seed, steps, batch, optimizer, schedule, checkpoints (:class:`TrainConfig`).

Paths are kept as written; relative ones are relative to the working directory of the command
(as with every other ``vlm-retain`` command). :func:`resolve` returns the config with every default
filled in; the trainer saves it as ``config.yaml`` in the run folder (:func:`save_resolved`) so a
run can be repeated from its folder alone, and :func:`config_hash` identifies it on resume.
"""

from __future__ import annotations

import hashlib
import json
import re
import types
import typing
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from vlm_retain.data.prompts import CAPTION_PROMPT, DEFAULT_OCR_PROMPT
from vlm_retain.errors import InputError
from vlm_retain.fsutil import atomic_write_text

#: Training asks the questions the evaluation asks (one definition in the data layer).
DEFAULT_CAPTION_PROMPT = CAPTION_PROMPT

CONFIG_NAME = "config.yaml"
#: LoRA target presets every family defines (models.registry ``lora_targets``).
LORA_TARGETS = ("llm", "llm-attn", "llm-mlp", "vision", "projector")
TRAINABLE_TASKS = ("ocr", "vqa", "caption")
REPORTERS = ("none", "tensorboard", "wandb", "mlflow")


class _Section(BaseModel):
    """Base of every section: unknown keys are errors that list the allowed ones."""

    model_config = ConfigDict(extra="forbid")


# --- model -----------------------------------------------------------------------------------


class ModelConfig(_Section):
    """The base model: a local folder or a hub id already in the local cache (nothing downloads)."""

    path: str = Field(description="model folder or hub id (resolved from the local cache only)")
    adapter: str | None = Field(
        None,
        description=(
            "not supported by train yet (must stay null): continuing a PEFT adapter is refused; "
            "merge it into the base first (vlm-retain merge wise-ft --alpha 1 --adapter A "
            "--merge-into-base) and train on the merged model"
        ),
    )
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="weights dtype when loading: auto = bf16 on a capable GPU, else fp32"
    )
    attn: Literal["auto", "sdpa", "eager", "flash_attention_2"] = Field(
        "auto", description="attention implementation: auto = SDPA (FlashAttention-2 if usable)"
    )
    trust_remote_code: bool = Field(
        False, description="run code shipped with the model folder (off: all families are native)"
    )
    allow_pickle: bool = Field(
        False, description="accept pickle checkpoints (*.bin), which can run arbitrary code"
    )


# --- tuning ----------------------------------------------------------------------------------


class LoraConfig(_Section):
    """LoRA / DoRA hyper-parameters (only valid with ``tuning.mode`` lora or dora)."""

    r: int = Field(16, ge=1, description="rank of the update matrices")
    alpha: float | None = Field(
        None, gt=0, description="scaling numerator (update scaled alpha/r); null = 2 x r (32)"
    )
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the LoRA input")
    targets: list[str] = Field(
        default_factory=lambda: ["llm"],
        description=(
            "family LoRA target presets: llm (all LLM linears), llm-attn, llm-mlp, vision, "
            "projector; resolved per family through the model registry"
        ),
    )

    @field_validator("targets", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _alpha(self) -> LoraConfig:
        if self.alpha is None:  # Biderman et al. 2024: alpha = 2r (as presets.LoraOptions)
            self.alpha = 2.0 * self.r
        return self

    @field_validator("targets")
    @classmethod
    def _known_targets(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError(f"give at least one target: {', '.join(LORA_TARGETS)}")
        unknown = [t for t in value if t not in LORA_TARGETS]
        if unknown:
            raise ValueError(
                f"unknown LoRA target {', '.join(unknown)}; allowed: {', '.join(LORA_TARGETS)}"
            )
        return value


class ComponentLR(_Section):
    """Learning rate per component; ``null`` means ``train.lr``.

    Why: OCR on new scripts needs the vision side to move (at a small rate) while the language
    model takes the usual rate; the projector often wants a higher one.
    """

    llm: float | None = Field(None, gt=0, description="language-model learning rate")
    projector: float | None = Field(None, gt=0, description="projector (merger) learning rate")
    vision: float | None = Field(None, gt=0, description="vision tower learning rate")


class TuningConfig(_Section):
    """What trains, parsed by :meth:`vlm_retain.train.presets.TuningSpec.parse` (one grammar).

    ``mode``: ``full`` (every weight), ``lora`` / ``dora`` (PEFT adapters on ``lora.targets``),
    or a selective full-rank spec: ``llm-attn`` (attention projections), ``llm-mlp-gate-up``
    (MLP gate and up) or ``llm-all``, followed by any of ``+projector``, ``+vision`` (the whole
    tower), ``+vision-top-k`` (its last ``vision_top_k`` blocks; or write ``+vision-top-4``),
    ``+embeddings``, ``+lm_head``, e.g. ``llm-attn+projector``. Additions also combine with
    LoRA (``lora+projector``: the projector at full rank beside the adapters). Presets resolve
    through the family registry, so they work for every supported family.
    """

    mode: str = Field("lora", description="full | lora | dora | selective spec (llm-attn+...)")
    lora: LoraConfig | None = Field(
        None, description="LoRA options (lora/dora modes only; defaults filled in for them)"
    )
    vision_top_k: int | None = Field(
        None, ge=1, description="number of last vision blocks trained by +vision-top-k"
    )
    lr: ComponentLR = Field(default_factory=ComponentLR, description="per-component learning rates")

    @field_validator("mode")
    @classmethod
    def _known_mode(cls, value: str) -> str:
        _parse_spec(value, vision_top_k=1)  # the grammar only; k is checked with the section
        return value

    @property
    def uses_lora(self) -> bool:
        return _parse_spec(self.mode, vision_top_k=self.vision_top_k or 1).peft

    def spec(self) -> Any:
        """The checked :class:`~vlm_retain.train.presets.TuningSpec` this section describes."""
        from vlm_retain.train.presets import LoraOptions

        lora = self.lora or LoraConfig()
        options = LoraOptions(
            r=lora.r, alpha=lora.alpha, dropout=lora.dropout, targets=tuple(lora.targets)
        )
        return _parse_spec(self.mode, vision_top_k=self.vision_top_k, lora=options)

    def trains(self, component: str) -> bool:
        """Whether ``component`` (llm, projector, vision, embeddings, lm_head) trains at all."""
        spec = _parse_spec(self.mode, vision_top_k=self.vision_top_k or 1)
        if spec.mode == "full":
            return True
        adds = set(spec.add) | ({"vision"} if "vision-top-k" in spec.add else set())
        if component in adds:
            return True
        if spec.peft:
            targets = set(self.lora.targets if self.lora else ["llm"])
            if component == "llm":
                return bool(targets & {"llm", "llm-attn", "llm-mlp"})
            return component in targets
        return component == "llm" and spec.llm is not None

    @model_validator(mode="after")
    def _consistent(self) -> TuningConfig:
        spec = _parse_spec(self.mode, vision_top_k=self.vision_top_k or 1)
        if spec.peft:
            if self.lora is None:
                self.lora = LoraConfig()
        elif self.lora is not None:
            raise ValueError(
                f"tuning.lora is set but tuning.mode is {self.mode!r}; LoRA options only apply "
                "to mode lora or dora (remove tuning.lora or change the mode)"
            )
        top_k = "vision-top-k" in spec.add
        literal_k = re.search(r"vision-top-\d+", self.mode) is not None
        if top_k and self.vision_top_k is None and not literal_k:
            raise ValueError(
                "tuning.mode has +vision-top-k: set tuning.vision_top_k (e.g. 4) or write "
                "+vision-top-4"
            )
        if self.vision_top_k is not None and (not top_k or literal_k):
            raise ValueError(
                "tuning.vision_top_k is set but tuning.mode has no +vision-top-k to apply it to "
                f"(mode is {self.mode!r})"
            )
        self.spec()  # LoRA-versus-addition conflicts
        for component in ("llm", "projector", "vision"):
            if getattr(self.lr, component) is not None and not self.trains(component):
                raise ValueError(
                    f"tuning.lr.{component} is set but mode {self.mode!r} trains no {component} "
                    "parameters"
                )
        return self


def _parse_spec(text: str, **kwargs: Any) -> Any:
    """``TuningSpec.parse`` with its InputError turned into a ValueError, so pydantic reports
    it under the ``tuning`` key path like every other config error."""
    from vlm_retain.train.presets import TuningSpec

    try:
        return TuningSpec.parse(text, **kwargs)
    except InputError as exc:
        raise ValueError(re.sub(r"^field '[\w.]+': ", "", str(exc))) from None


# --- data ------------------------------------------------------------------------------------


class TargetSource(_Section):
    """A target manifest: what the model should learn (e.g. Digital Peter lines)."""

    manifest: str = Field(description="manifest folder or manifest.jsonl")
    split: Literal["train", "val", "test"] = Field("train", description="split to train on")
    tasks: list[Literal["ocr", "vqa", "caption"]] | None = Field(
        None, description="record tasks to train on (null: every trainable task in the manifest)"
    )
    weight: float = Field(
        1.0, gt=0, description="passes per epoch: 2 repeats every sample, 0.5 draws half"
    )
    name: str | None = Field(
        None, description="source name for per-source loss (default: the records' source)"
    )


class ReplaySource(_Section):
    """A replay source: general data mixed in so the model keeps its skills.

    Give exactly one of ``manifest`` (any manifest: ocr, vqa, caption records), ``world`` (a
    ``data synth world`` folder; its manifest is used) or ``benchmark`` (a folder with a
    ``manifest.jsonl``, or a benchmark in its own layout: VQAv2, TextVQA, DocVQA, COCO captions,
    Flickr30k, with image files; parquet shards are refused). ``split`` defaults to ``train``
    (matched to ``train2014``... in real benchmarks); see :mod:`vlm_retain.train.benchmark_replay`.
    """

    manifest: str | None = Field(None, description="manifest folder or manifest.jsonl")
    world: str | None = Field(None, description="synthetic world folder (data synth world)")
    benchmark: str | None = Field(
        None,
        description=(
            "benchmark folder: a manifest.jsonl, or VQAv2/TextVQA/DocVQA/COCO/Flickr30k in their "
            "own layout (VQA: majority answer; captions: one reference per image)"
        ),
    )
    split: Literal["train", "val", "test"] = Field("train", description="split to draw from")
    tasks: list[Literal["ocr", "vqa", "caption"]] | None = Field(
        None, description="record tasks to use (null: every trainable task: ocr, vqa, caption)"
    )
    weight: float = Field(1.0, gt=0, description="share of the replay token budget (relative)")
    name: str | None = Field(None, description="source name (default: the records' source)")

    @model_validator(mode="after")
    def _exactly_one(self) -> ReplaySource:
        given = [k for k in ("manifest", "world", "benchmark") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "a replay source needs exactly one of manifest, world, benchmark"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("manifest", "world", "benchmark") if getattr(self, k) is not None)

    @property
    def path(self) -> str:
        return str(getattr(self, self.kind))


class SelfReplayConfig(_Section):
    """Self-replay: the base model's own answers on general prompts become replay targets.

    Why: when the original general data is unavailable (or its answers differ in style from what
    the model says), the model's own answers carry no off-distribution signal. They are
    generated once before training and cached under ``cache_dir``, keyed by model and data.
    """

    enabled: bool = Field(False, description="generate and mix in self-replay samples")
    prompts_from: str | None = Field(
        None, description="manifest or world folder whose images and prompts are answered"
    )
    split: Literal["train", "val", "test"] = Field("train", description="split of prompts_from")
    n: int = Field(256, ge=1, description="number of prompts answered (seeded draw)")
    weight: float = Field(1.0, gt=0, description="share of the replay token budget (relative)")
    cache_dir: str = Field(
        ".cache/vlm-retain/self-replay", description="where generated answers are cached"
    )

    @model_validator(mode="after")
    def _needs_prompts(self) -> SelfReplayConfig:
        if self.enabled and not self.prompts_from:
            raise ValueError("data.self_replay.enabled needs data.self_replay.prompts_from")
        return self


class EvalData(_Section):
    """Held-out target data scored during training (loss and CER)."""

    manifest: str = Field(description="manifest folder or manifest.jsonl")
    split: Literal["train", "val", "test"] = Field("val", description="split to score")
    limit: int | None = Field(None, ge=1, description="score at most this many samples")


class DataConfig(_Section):
    """Training data: target manifests, replay sources and how much replay, in tokens.

    ``replay_share`` is the share of training TOKENS (image + prompt + answer) that replay takes
    in each epoch, not of samples: a line image and a scene cost very different numbers of
    tokens, so sample counts are misleading. Replay is re-drawn each epoch.
    """

    target: list[TargetSource] = Field(description="target manifests (at least one)")
    replay: list[ReplaySource] = Field(default_factory=list, description="replay sources")
    replay_share: float = Field(
        0.0, ge=0, lt=1, description="share of tokens per epoch taken by replay (0 = no replay)"
    )
    self_replay: SelfReplayConfig = Field(
        default_factory=SelfReplayConfig, description="base-model answers as replay targets"
    )
    prompt: str = Field(DEFAULT_OCR_PROMPT, description="prompt for OCR records")
    caption_prompt: str = Field(DEFAULT_CAPTION_PROMPT, description="prompt for caption records")
    max_pixels: int | None = Field(
        None,
        ge=28 * 28,
        description=(
            "pixel budget per image: larger images are downscaled keeping their aspect "
            "(Qwen: sides kept multiples of 28); null = the processor's own limit"
        ),
    )
    eval: EvalData | None = Field(None, description="held-out target data scored while training")

    @field_validator("target")
    @classmethod
    def _some_target(cls, value: list[TargetSource]) -> list[TargetSource]:
        if not value:
            raise ValueError("give at least one target manifest")
        return value

    @property
    def has_replay(self) -> bool:
        return self.replay_share > 0 and (bool(self.replay) or self.self_replay.enabled)

    @model_validator(mode="after")
    def _replay_consistent(self) -> DataConfig:
        sources = bool(self.replay) or self.self_replay.enabled
        if self.replay_share > 0 and not sources:
            raise ValueError(
                f"data.replay_share is {self.replay_share} but there is no replay data: add "
                "data.replay sources or enable data.self_replay"
            )
        if sources and self.replay_share == 0:
            raise ValueError(
                "replay data is configured but data.replay_share is 0, so it would never be "
                "drawn: set data.replay_share (e.g. 0.25) or remove the replay sources"
            )
        return self


# --- objectives ------------------------------------------------------------------------------


class CEConfig(_Section):
    """Cross-entropy on the answer tokens (target and replay samples)."""

    weight: float = Field(1.0, ge=0, description="weight of the cross-entropy term")


class KLConfig(_Section):
    """KL between the base model's and the trained model's next-token distributions.

    ``scope`` says which samples get the term (named ``scope``, not ``on``, because YAML reads
    a bare ``on`` key as the boolean true). The base is the same weights with the adapter
    disabled (LoRA) or a frozen copy (full or selective tuning), fed the full multimodal input.
    ``direction``: ``forward`` is KL(base || model) (the model must cover what the base would
    say), ``reverse`` is KL(model || base). ``top_k`` restricts both distributions to the
    base's top-k tokens so a 150k vocabulary fits in memory (null: the full vocabulary, chunked).
    """

    weight: float = Field(0.0, ge=0, description="weight of the KL term (0 = off)")
    scope: Literal["replay", "all"] = Field(
        "replay", description="samples the KL is computed on: replay samples only, or all"
    )
    temperature: float = Field(1.0, gt=0, description="softmax temperature of both models")
    top_k: int | None = Field(None, ge=1, description="base top-k tokens only (null: all)")
    direction: Literal["forward", "reverse"] = Field(
        "forward", description="forward = KL(base||model), reverse = KL(model||base)"
    )


class L2SPConfig(_Section):
    """L2-SP: squared distance of trainable weights from their start (LoRA: of the delta)."""

    weight: float = Field(0.0, ge=0, description="weight of the L2-SP term (0 = off)")


class EWCConfig(_Section):
    """EWC: diagonal Fisher (estimated on general samples with the base) x squared distance."""

    weight: float = Field(0.0, ge=0, description="weight of the EWC term (0 = off)")
    samples: int = Field(64, ge=1, description="general samples used to estimate the Fisher")
    data: str | None = Field(
        None,
        description=(
            "manifest, world or benchmark folder for the Fisher, split train (null: the first "
            "replay source with its split and tasks, else probe.data)"
        ),
    )
    cache_dir: str = Field(
        ".cache/vlm-retain/fisher", description="where Fisher estimates are cached and reused"
    )


class ObjectivesConfig(_Section):
    """The loss: a weighted sum of composable terms, each logged on its own."""

    ce: CEConfig = Field(default_factory=CEConfig, description="cross-entropy")
    kl_to_base: KLConfig = Field(default_factory=KLConfig, description="KL to the base model")
    l2sp: L2SPConfig = Field(default_factory=L2SPConfig, description="L2-SP anchor")
    ewc: EWCConfig = Field(default_factory=EWCConfig, description="EWC anchor")


# --- probe and train -------------------------------------------------------------------------


class ProbeConfig(_Section):
    """A small general probe scored while training, and the floor that stops a run."""

    data: str | None = Field(
        None, description="world or benchmark folder with VQA/caption items (null: no probe)"
    )
    every_steps: int = Field(100, ge=1, description="score the probe every N optimizer steps")
    limit: int = Field(64, ge=1, description="probe items scored each time")
    retention_floor: float | None = Field(
        None,
        gt=0,
        le=1,
        description=(
            "stop when probe score / base score falls below this; the last checkpoint above "
            "it is kept (null: never stop)"
        ),
    )


class TrainConfig(_Section):
    """The training loop."""

    seed: int = Field(0, description="seed for data order, mixture draws and initialization")
    epochs: float = Field(1.0, gt=0, description="passes over the target data")
    max_steps: int | None = Field(
        None, ge=1, description="optimizer steps; overrides epochs when set"
    )
    batch_size: int = Field(
        8, ge=1, description="samples per device per micro-step (what one loss averages over)"
    )
    grad_accum: int = Field(1, ge=1, description="micro-steps per optimizer step")
    chunk_rows: Literal["auto"] | int = Field(
        "auto",
        description="samples per forward/backward pass: a micro-batch larger than this runs "
        "in chunks whose losses are weighted as the whole batch's (the same step); auto = "
        "chosen from free GPU memory at the start (the whole micro-batch where it fits, "
        "gradient checkpointing only where no chunk fits without it); on CPU the whole batch",
    )
    lr: float = Field(1e-4, gt=0, description="learning rate (components: tuning.lr)")
    scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = Field(
        "cosine", description="learning-rate schedule after warm-up"
    )
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="share of steps spent warming up")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    max_grad_norm: float | None = Field(1.0, gt=0, description="gradient clipping (null: off)")
    gradient_checkpointing: Literal["auto", "on", "off"] = Field(
        "auto", description="auto = off where memory allows (it costs ~3.3x on short lines)"
    )
    vision_cache: Literal["auto", "on", "off"] = Field(
        "auto",
        description="reuse each image's vision-tower output (Qwen families): auto = on when the "
        "vision tower and projector are frozen; LRU-bounded at 2048 MiB",
    )
    prefetch: Literal["auto", "on", "off"] = Field(
        "auto",
        description="collate the next batches in a background thread during the step: auto = "
        "on with CUDA (on a CPU the cores are busy with the step); the same batches",
    )
    sample_cache_mib: float = Field(
        2048,
        ge=0,
        description="keep each training sample's encoded tensors (image patches, tokens) for "
        "later epochs, up to this many MiB (Qwen families; 0: off); the same batches",
    )
    answer_only_logits: Literal["auto", "on", "off"] = Field(
        "auto",
        description="compute LM-head logits only where a loss reads them (the answers), not at "
        "every image and prompt token: auto = on where the model supports it (same loss)",
    )
    packing: Literal["on", "off"] = Field(
        "off",
        description="pack each micro-batch's lines end to end into rows without padding "
        "(Qwen families; each line attends only to itself): the same losses up to float "
        "rounding; off until a GPU run shows it pays",
    )
    compile: Literal["auto", "on", "off"] = Field(
        "auto",
        description="torch.compile each decoder layer of the language model (regional): the "
        "same losses up to rounding; the first steps pay the compilation; auto = on with CUDA "
        "(a third faster on an H200, docs/performance.md), off on CPU",
    )
    packing_row_tokens: int = Field(
        4096, ge=1, description="tokens per packed row (a longer line gets a row of its own)"
    )
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="compute precision: auto = bf16 on a capable GPU, fp32 on CPU"
    )
    group_by_length: bool = Field(
        True, description="batch samples of similar token length together (less padding)"
    )
    report_to: list[Literal["none", "tensorboard", "wandb", "mlflow"]] = Field(
        default_factory=lambda: ["none"],
        description="experiment trackers (none by default: the data may be confidential)",
    )
    save_every_steps: int = Field(500, ge=1, description="checkpoint every N optimizer steps")
    keep_checkpoints: int = Field(2, ge=1, description="checkpoints kept (oldest removed)")
    output_dir: str = Field(description="run folder (config.yaml, checkpoints, adapter/model)")

    @field_validator(
        "gradient_checkpointing",
        "vision_cache",
        "answer_only_logits",
        "packing",
        "compile",
        "prefetch",
        mode="before",
    )
    @classmethod
    def _yaml_bool(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare on/off as a boolean
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value

    @field_validator("chunk_rows")
    @classmethod
    def _positive_rows(cls, value: Any) -> Any:
        if isinstance(value, int) and value < 1:
            raise ValueError("chunk_rows must be auto or at least 1")
        return value

    @field_validator("report_to", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("report_to")
    @classmethod
    def _none_alone(cls, value: list[str]) -> list[str]:
        if not value:
            return ["none"]
        if "none" in value and len(value) > 1:
            raise ValueError("report_to: 'none' cannot be combined with a tracker")
        return value


# --- the whole run ---------------------------------------------------------------------------


class RunConfig(_Section):
    """A training run. See the module docstring for the sections."""

    name: str | None = Field(None, description="a label for the run (reports, trackers)")
    model: ModelConfig
    tuning: TuningConfig = Field(default_factory=TuningConfig)
    data: DataConfig
    objectives: ObjectivesConfig = Field(default_factory=ObjectivesConfig)
    probe: ProbeConfig = Field(default_factory=ProbeConfig)
    train: TrainConfig

    @model_validator(mode="after")
    def _cross_section(self) -> RunConfig:
        kl = self.objectives.kl_to_base
        if kl.weight > 0 and kl.scope == "replay" and not self.data.has_replay:
            raise ValueError(
                "objectives.kl_to_base.scope is 'replay' but there is no replay data: add "
                "data.replay with data.replay_share > 0, or set objectives.kl_to_base.scope: all"
            )
        if self.probe.retention_floor is not None and not self.probe.data:
            raise ValueError(
                "probe.retention_floor needs probe.data (a world or benchmark folder to measure "
                "retention on)"
            )
        ewc = self.objectives.ewc
        if ewc.weight > 0 and not (ewc.data or self.data.replay or self.probe.data):
            raise ValueError(
                "objectives.ewc needs general data for the Fisher: set objectives.ewc.data, "
                "data.replay or probe.data"
            )
        if self.objectives.ce.weight == 0 and kl.weight == 0:
            raise ValueError("every objective weight is 0: nothing would train")
        return self


# --- loading, overrides, resolving -----------------------------------------------------------


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    """Read a YAML config, apply ``--set key.path=value`` overrides, validate.

    Every problem is an :class:`InputError` naming the file and the key path (and, for unknown
    keys, the keys allowed at that level), raised before anything heavy is imported or loaded.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("config file not found", path=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"unreadable config ({exc})", path=path) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(f"invalid YAML ({_one_line(str(exc))})", path=path) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InputError("the config must be a mapping of sections", path=path)
    return config_from_dict(apply_overrides(raw, overrides), source=path)


def config_from_dict(raw: dict[str, Any], *, source: str | Path | None = None) -> RunConfig:
    """Validate a plain dict (a parsed YAML) into a :class:`RunConfig`, errors as InputError."""
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise InputError(_describe(exc), path=source) from None


def apply_overrides(raw: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """A copy of ``raw`` with each ``key.path=value`` set (value parsed as YAML: ``0.5`` is a
    float, ``[a, b]`` a list, ``null`` None, ``true`` a bool).

    Keys are checked against the schema as the path is walked, so an unknown key is an error
    listing the keys allowed at that level. List items are addressed by index
    (``data.target.0.weight=2``); an index one past the end appends an item.
    """
    result = json.loads(json.dumps(raw))  # deep copy of plain YAML data
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError(f"--set {item!r}: expected key.path=value (e.g. train.lr=1e-4)")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise InputError(
                f"--set {key}: value is not valid YAML ({_one_line(str(exc))})"
            ) from None
        _set_path(result, key, value)
    return result


def _set_path(raw: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node: Any = raw
    model: type[BaseModel] | None = RunConfig
    walked: list[str] = []
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = ".".join(walked) or "the top level"
        if isinstance(node, list):
            if not part.isdigit() or int(part) > len(node):
                raise InputError(
                    f"--set {key}: {where} is a list of {len(node)}; use an index 0..{len(node)}"
                )
            index = int(part)
            if index == len(node):
                node.append({} if not last else None)
            if last:
                node[index] = value
                return
            if node[index] is None:
                node[index] = {}
            node, model = node[index], _item_model(model)
        else:
            if model is None or not isinstance(node, dict):
                raise InputError(f"--set {key}: {where} has no keys (it is a value)")
            if part not in model.model_fields:
                raise InputError(
                    f"--set {key}: unknown key {part!r} in {where}",
                    hint=f"allowed keys: {', '.join(model.model_fields)}",
                )
            if last:
                node[part] = value
                return
            annotation = model.model_fields[part].annotation
            child_model, is_list = _nested(annotation)
            if child_model is None and not is_list:
                raise InputError(
                    f"--set {key}: {'.'.join([*walked, part])} is a value, not a section"
                )
            if node.get(part) is None:
                node[part] = [] if is_list else {}
            node = node[part]
            model = child_model if not is_list else _ListOf(child_model)  # type: ignore[assignment]
        walked.append(part)


class _ListOf:
    """Marker for 'a list whose items are ``item`` models' while walking an override path."""

    def __init__(self, item: type[BaseModel] | None) -> None:
        self.item = item


def _item_model(model: Any) -> type[BaseModel] | None:
    return model.item if isinstance(model, _ListOf) else None


def _nested(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """``(model class, is_list)`` for a field annotation: ``X``, ``X | None``, ``list[X]``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if arg is not type(None):
                found = _nested(arg)
                if found != (None, False):
                    return found
        return None, False
    if origin is list:
        (item,) = typing.get_args(annotation) or (Any,)
        return (item if _is_model(item) else None), True
    return (annotation if _is_model(annotation) else None), False


def _is_model(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, BaseModel)


def _describe(exc: ValidationError) -> str:
    """One line for all validation errors: ``key.path: what`` joined by ``; ``."""
    messages = []
    for error in exc.errors():
        loc = [str(p) for p in error["loc"]]
        where = _dotted(error["loc"])
        if error["type"] == "extra_forbidden":
            parent = _model_at(error["loc"][:-1])
            allowed = f"; allowed keys: {', '.join(parent.model_fields)}" if parent else ""
            messages.append(f"{where}: unknown key{allowed}")
            continue
        msg = error["msg"].removeprefix("Value error, ")
        if error["type"] == "missing":
            msg = "required key is missing"
        elif "input" in error and error["type"] not in ("value_error",) and loc:
            msg += f" (got {error['input']!r})"
        # cross-field messages already start with the key they are about
        named = not where or msg.startswith(where.split("[")[0])
        messages.append(msg if named else f"{where}: {msg}")
    return "; ".join(messages)


def _dotted(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _model_at(loc: Sequence[Any]) -> type[BaseModel] | None:
    model: Any = RunConfig
    for part in loc:
        if isinstance(part, int):
            continue
        if not _is_model(model) or part not in model.model_fields:
            return None
        model, _ = _nested(model.model_fields[part].annotation)
    return model if _is_model(model) else None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def resolve(config: RunConfig) -> dict[str, Any]:
    """The config with every default filled in, as plain YAML/JSON data.

    Loading this dict back gives an equal config (the trainer saves it as ``config.yaml``).
    """
    return config.model_dump(mode="json")


def config_hash(config: RunConfig) -> str:
    """SHA-256 of the resolved config (canonical JSON): identifies a run's setup on resume."""
    canonical = json.dumps(resolve(config), sort_keys=True, ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def dump_yaml(config: RunConfig) -> str:
    """The resolved config as YAML text (sections in schema order, Unicode kept)."""
    return yaml.safe_dump(resolve(config), sort_keys=False, allow_unicode=True, width=100)


def save_resolved(config: RunConfig, run_dir: str | Path) -> Path:
    """Write the resolved config to ``run_dir/config.yaml`` atomically; return its path."""
    target = Path(run_dir) / CONFIG_NAME
    atomic_write_text(target, dump_yaml(config))
    return target
