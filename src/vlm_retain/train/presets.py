"""What trains: tuning modes and selective presets, resolved through the family registry.

Why presets instead of freeze flags or name lists: the retention literature's best recipes are
specific sub-modules at full rank (Zhu et al. 2025: attention projections only, or MLP gate+up
only, lose 0.6 / 2.1 pp held-out against 23 pp for the whole LLM), and "LoRA on the LLM" must not
silently hit the vision tower's identically named MLP (Qwen2.5-VL). Every name here comes from
:class:`~vlm_retain.models.registry.Family` (component regexes and LoRA target presets), so one
spec means the same thing for every supported family.

Spec strings (:meth:`TuningSpec.parse`): a base followed by ``+additions``.

============================  ===============================================================
base                          what trains
============================  ===============================================================
``full``                      every parameter (vision tower included)
``lora`` / ``dora``           PEFT adapters on ``LoraOptions.targets`` (default: LLM linears)
``llm-attn``                  LLM attention projections q/k/v/o (weights and biases)
``llm-mlp-gate-up``           LLM MLP gate and up projections (down stays frozen)
``llm-all``                   the whole LLM component: decoder layers and final norm
============================  ===============================================================

Additions (full rank, also with ``lora``/``dora``, where PEFT trains and saves a copy of the
module via ``modules_to_save``): ``+projector``, ``+vision``, ``+vision-top-k`` (the last
``k`` vision blocks and anything after them in the tower, e.g. a post-layernorm; write
``+vision-top-4`` or set ``vision_top_k``), ``+embeddings``, ``+lm_head``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from vlm_retain.errors import InputError
from vlm_retain.models.registry import Family, module_groups

MODES = ("full", "lora", "dora", "selective")
LLM_PRESETS = ("llm-attn", "llm-mlp-gate-up", "llm-all")
ADDITIONS = ("projector", "vision", "vision-top-k", "embeddings", "lm_head")
BASES = ("full", "lora", "dora", *LLM_PRESETS)
_TOP_K = re.compile(r"^vision-top-(\d+|k)$")


@dataclass(frozen=True)
class LoraOptions:
    """PEFT LoRA settings. ``targets`` are family LoRA presets (``llm``, ``llm-attn``,
    ``llm-mlp``, ``vision``, ``projector``); the default ``("llm",)`` is every linear of the
    language model and nothing of the vision tower. ``alpha`` defaults to ``2 * r`` (Biderman
    et al. 2024's best practice)."""

    r: int = 16
    alpha: float | None = None
    dropout: float = 0.05
    targets: tuple[str, ...] = ("llm",)
    rslora: bool = False

    @property
    def lora_alpha(self) -> float:
        return float(self.alpha) if self.alpha is not None else 2.0 * self.r


@dataclass(frozen=True)
class TuningSpec:
    """What trains. Build it with :meth:`parse` (from a config string) or directly.

    ``mode`` is ``full``, ``lora``, ``dora`` or ``selective``; ``llm`` the selective LLM preset
    (one of :data:`LLM_PRESETS`, or None for "no LLM weights", e.g. ``projector`` alone is
    written ``selective`` with ``add=("projector",)``); ``add`` the full-rank additions.
    """

    mode: str = "lora"
    llm: str | None = None
    add: tuple[str, ...] = ()
    vision_top_k: int = 0
    lora: LoraOptions = field(default_factory=LoraOptions)

    @classmethod
    def parse(
        cls, text: str, *, vision_top_k: int | None = None, lora: LoraOptions | None = None
    ) -> TuningSpec:
        """``"llm-attn+projector"``, ``"lora+vision-top-2"``, ``"full"`` -> a checked spec.

        ``vision_top_k`` gives ``k`` for a ``+vision-top-k`` written literally.
        """
        parts = [p.strip() for p in str(text).split("+")]
        base, adds = parts[0], parts[1:]
        if base not in BASES and base not in ADDITIONS and not _TOP_K.match(base):
            raise InputError(
                f"unknown tuning {base!r}",
                field="tuning",
                hint=f"start with one of {', '.join(BASES)}, then +{', +'.join(ADDITIONS)}",
            )
        if base in ADDITIONS or _TOP_K.match(base):  # "projector" alone: selective, no LLM
            mode, llm, adds = "selective", None, parts
        elif base in LLM_PRESETS:
            mode, llm = "selective", base
        else:
            mode, llm = base, None
        k = vision_top_k or 0
        names: list[str] = []
        for add in adds:
            top = _TOP_K.match(add)
            if top:
                if top.group(1) != "k":
                    k = int(top.group(1))
                add = "vision-top-k"
            if add not in ADDITIONS:
                raise InputError(
                    f"unknown tuning addition +{add}",
                    field="tuning",
                    hint=f"use +{', +'.join(ADDITIONS)} (vision-top-k as vision-top-4)",
                )
            if add in names:
                raise InputError(f"+{add} given twice", field="tuning")
            names.append(add)
        spec = cls(mode=mode, llm=llm, add=tuple(names), vision_top_k=k, lora=lora or LoraOptions())
        spec.check()
        return spec

    def check(self) -> None:
        """Raise :class:`InputError` for contradictory settings, before any model loads."""
        if self.mode not in MODES:
            raise InputError(f"unknown tuning mode {self.mode!r}", hint=f"use {', '.join(MODES)}")
        if self.mode == "full" and self.add:
            raise InputError(
                "full tuning already trains everything; drop the +additions", field="tuning"
            )
        if self.mode == "selective" and self.llm is None and not self.add:
            raise InputError("a selective spec trains nothing", field="tuning")
        if self.llm is not None and (self.mode != "selective" or self.llm not in LLM_PRESETS):
            raise InputError(f"LLM preset {self.llm!r} needs mode selective", field="tuning")
        if "vision" in self.add and "vision-top-k" in self.add:
            raise InputError("+vision already includes +vision-top-k; keep one", field="tuning")
        if "vision-top-k" in self.add and self.vision_top_k < 1:
            raise InputError(
                "+vision-top-k needs k >= 1", field="vision_top_k", hint="write +vision-top-4"
            )
        if self.mode in ("lora", "dora"):
            if self.lora.r < 1:
                raise InputError("LoRA rank must be >= 1", field="lora.r")
            if not 0.0 <= self.lora.dropout < 1.0:
                raise InputError("LoRA dropout must be in [0, 1)", field="lora.dropout")
            overlap = {"vision", "projector"} & set(self.lora.targets) & set(self.add)
            if overlap or ("vision" in self.lora.targets and "vision-top-k" in self.add):
                raise InputError(
                    "a component cannot get both LoRA and full-rank training",
                    field="lora.targets",
                    hint="drop it from lora.targets or from the +additions",
                )

    @property
    def peft(self) -> bool:
        return self.mode in ("lora", "dora")

    def __str__(self) -> str:
        base = self.llm if self.mode == "selective" else self.mode
        adds = [f"vision-top-{self.vision_top_k}" if a == "vision-top-k" else a for a in self.add]
        return "+".join([base, *adds] if base else adds)

    def with_lora(self, **changes: Any) -> TuningSpec:
        return replace(self, lora=replace(self.lora, **changes))


@dataclass
class TunedModel:
    """A model ready to train: ``model`` is what the optimizer and checkpointing see (a
    ``PeftModel`` for lora/dora, else the original model, modified in place)."""

    model: Any
    family: Family
    spec: TuningSpec

    @property
    def peft(self) -> bool:
        return self.spec.peft

    def trainable_names(self) -> list[str]:
        return [n for n, p in self.model.named_parameters() if p.requires_grad]


def apply_tuning(model: Any, family: Family, spec: TuningSpec) -> TunedModel:
    """Freeze everything, then unfreeze (or wrap with PEFT) exactly what ``spec`` names.

    For lora/dora the returned ``TunedModel.model`` is a new ``PeftModel`` around ``model``;
    additions become PEFT ``modules_to_save`` so they are saved with the adapter and disappear
    under ``disable_adapter()`` (which the KL reference relies on).
    """
    spec.check()
    for param in model.parameters():
        param.requires_grad_(False)
    if spec.mode == "full":
        for param in model.parameters():
            param.requires_grad_(True)
        return TunedModel(model, family, spec)
    extra = addition_params(model, family, spec)
    if spec.mode == "selective":
        names = set(extra) | set(llm_preset_params(model, family, spec.llm))
        params = dict(model.named_parameters())
        for name in names:
            params[name].requires_grad_(True)
        return TunedModel(model, family, spec)
    return TunedModel(_wrap_peft(model, family, spec, extra), family, spec)


def llm_preset_params(model: Any, family: Family, preset: str | None) -> list[str]:
    """Parameter names a selective LLM preset trains (empty for None)."""
    if preset is None:
        return []
    if preset == "llm-all":
        names = module_groups(model, family)["llm"]
    else:
        regex = family.lora_targets["llm-attn" if preset == "llm-attn" else "llm-mlp"]
        keep = ("gate_proj", "up_proj") if preset == "llm-mlp-gate-up" else None
        modules = [
            name
            for name, _ in model.named_modules()
            if re.fullmatch(regex, name) and (keep is None or name.endswith(keep))
        ]
        names = [f"{m}.{p}" for m in modules for p, _ in _module(model, m).named_parameters()]
    if not names:
        raise InputError(f"preset {preset} matches no parameters in this {family.title} model")
    return names


def addition_params(model: Any, family: Family, spec: TuningSpec) -> list[str]:
    """Parameter names the ``+additions`` of ``spec`` train (each must match something)."""
    groups = module_groups(model, family)
    names: list[str] = []
    for add in spec.add:
        if add == "vision-top-k":
            found = vision_top_k_params(model, family, spec.vision_top_k)
        else:
            found = groups[add]
        if not found:
            why = " (tied to the embeddings: use +embeddings)" if add == "lm_head" else ""
            raise InputError(f"+{add} matches no parameters in this {family.title} model{why}")
        names.extend(found)
    return names


def vision_top_k_params(model: Any, family: Family, k: int) -> list[str]:
    """The last ``k`` vision blocks and every vision parameter registered after them.

    Blocks are found as ``<prefix>.(blocks|layers|layer).<i>.`` among the vision parameters
    (InternVL's tower says ``encoder.layer.<i>``); the parameters after the last block
    (Idefics3/SigLIP ``post_layernorm``) sit between the top block and the projector, so
    training the top blocks without them would be odd.
    """
    vision = module_groups(model, family)["vision"]
    block = re.compile(r"^(.*\.(?:blocks|layers?))\.(\d+)\.")
    indices = sorted({int(m.group(2)) for n in vision if (m := block.match(n))})
    if not indices:
        raise InputError(f"no vision blocks found in this {family.title} model")
    if k > len(indices):
        raise InputError(
            f"vision-top-{k}: the vision tower has only {len(indices)} blocks",
            field="vision_top_k",
        )
    top = set(indices[-k:])
    last_block = max(i for i, n in enumerate(vision) if block.match(n))
    return [
        n
        for i, n in enumerate(vision)
        if ((m := block.match(n)) and int(m.group(2)) in top) or i > last_block
    ]


def covering_modules(model: Any, names: Iterable[str]) -> list[str]:
    """The fewest whole modules whose parameters are exactly ``names`` (for ``modules_to_save``).

    Containers (``ModuleList``/``ModuleDict``) are never chosen, since PEFT wraps a module's
    ``forward`` and containers have none; their children are taken instead.
    """
    import torch.nn as nn

    wanted = set(names)
    chosen: list[str] = []

    def visit(prefix: str, module: Any) -> None:
        own = {f"{prefix}{n}" for n, _ in module.named_parameters()}
        if not own & wanted:
            return
        if own <= wanted and not isinstance(module, (nn.ModuleList, nn.ModuleDict)) and prefix:
            chosen.append(prefix.rstrip("."))
            return
        direct = {f"{prefix}{n}" for n, _ in module.named_parameters(recurse=False)}
        if direct & wanted:
            raise InputError(
                f"cannot train part of module {prefix.rstrip('.') or '(root)'} with LoRA "
                "(its own parameters are only partly selected)"
            )
        for child_name, child in module.named_children():
            visit(f"{prefix}{child_name}.", child)

    visit("", model)
    return chosen


def _wrap_peft(model: Any, family: Family, spec: TuningSpec, extra: list[str]) -> Any:
    from peft import LoraConfig, get_peft_model

    opts = spec.lora
    config = LoraConfig(
        r=opts.r,
        lora_alpha=opts.lora_alpha,
        lora_dropout=opts.dropout,
        target_modules=family.lora_regex(opts.targets),
        use_dora=spec.mode == "dora",
        use_rslora=opts.rslora,
        bias="none",
        modules_to_save=covering_modules(model, extra) or None,
    )
    return get_peft_model(model, config)


def _module(model: Any, name: str) -> Any:
    return model.get_submodule(name)
