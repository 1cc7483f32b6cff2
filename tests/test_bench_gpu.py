"""``vlm-retain bench gpu`` on CPU: real shapes (meta device only), synthetic inputs, a tiny run."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from vlm_retain.bench import gpu  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

REQUIRED = [
    "eval.baseline_lines_per_s",
    "eval.ours_lines_per_s",
    "eval.ours_batch_size",
    "train.baseline_tokens_per_s",
    "train.ours_tokens_per_s",
    "train.mfu",
    "train.kl_overhead",
    "train.peak_gib",
]


@pytest.mark.parametrize(
    ("shape", "dims", "params"),
    [
        ("3b", (2048, 36, 16, 2, 11008, 151936), 3.75e9),
        ("7b", (3584, 28, 28, 4, 18944, 152064), 8.29e9),
    ],
)
def test_shape_configs_are_the_real_ones(shape, dims, params):
    from transformers import Qwen2_5_VLConfig

    cfg = gpu.load_config(shape)
    assert isinstance(cfg, Qwen2_5_VLConfig)
    text, vision = cfg.text_config, cfg.vision_config
    got = (
        text.hidden_size,
        text.num_hidden_layers,
        text.num_attention_heads,
        text.num_key_value_heads,
        text.intermediate_size,
        text.vocab_size,
    )
    assert got == dims
    assert text.rope_parameters["rope_theta"] == 1e6
    assert list(text.rope_parameters["mrope_section"]) == [16, 24, 24]
    assert (vision.depth, vision.hidden_size, vision.intermediate_size, vision.num_heads) == (
        32,
        1280,
        3420,
        16,
    )
    assert (vision.patch_size, vision.spatial_merge_size, vision.temporal_patch_size) == (14, 2, 2)
    assert vision.window_size == 112
    assert list(vision.fullatt_block_indexes) == [7, 15, 23, 31]
    assert vision.out_hidden_size == text.hidden_size
    assert cfg.tie_word_embeddings is (shape == "3b")
    ids = (cfg.image_token_id, cfg.video_token_id, cfg.vision_start_token_id)
    assert ids == (151655, 151656, 151652)
    assert cfg.vision_end_token_id == 151653
    assert (text.eos_token_id, text.pad_token_id) == (151645, 151643)
    counted = gpu.param_count(cfg)  # meta device: nothing allocated
    assert counted["total"] == pytest.approx(params, abs=0.01e9)
    assert 0.66e9 < counted["vision"] < 0.68e9  # 669 M (3B), 677 M (7B): the merger differs


def test_synthetic_line_batch_has_32_image_tokens_and_answer_labels():
    cfg = gpu.load_config("7b")
    batch = gpu.synthetic_batch(cfg, 3, answer=True)
    ids, labels = batch["input_ids"], batch["labels"]
    assert gpu.image_tokens_per_line(cfg) == 32
    assert ids.shape == (3, 131)
    assert ((ids == cfg.image_token_id).sum(dim=1) == 32).all()
    assert ((ids == cfg.vision_start_token_id).sum(dim=1) == 1).all()
    assert batch["image_grid_thw"].tolist() == [[1, 4, 32]] * 3
    assert batch["pixel_values"].shape == (3 * 4 * 32, 3 * 2 * 14 * 14)
    assert batch["attention_mask"].all()
    # labels on the 48 answer tokens only, equal to the inputs there
    assert ((labels != -100).sum(dim=1) == gpu.ANSWER_TOKENS).all()
    assert (labels[:, -gpu.ANSWER_TOKENS :] == ids[:, -gpu.ANSWER_TOKENS :]).all()
    assert (labels[:, : -gpu.ANSWER_TOKENS] == -100).all()
    # no special id among the text and answer tokens
    assert (ids[labels != -100] < min(cfg.image_token_id, cfg.vision_start_token_id)).all()


def test_prompts_of_different_lengths_are_left_padded():
    cfg = gpu.load_config("tiny")
    batch = gpu.synthetic_batch(cfg, 2, answer=False, prompt_lengths=[49, 40])
    mask = batch["attention_mask"]
    assert mask.shape == (2, 83)
    assert mask[0].all() and mask[1, :9].sum() == 0 and mask[1, 9:].all()
    assert (batch["input_ids"][1, :9] == cfg.text_config.pad_token_id).all()


def _plain_and_ours(model, batch, *, teacher: bool, vision_cache: bool = False) -> None:
    """The plain step's and ours' loss and gradients on ``batch`` are the same (ours run twice
    with ``vision_cache``: once filling the cache, once reading it)."""
    from vlm_retain.train.vision_cache import VisionCache

    cache = VisionCache().install(model) if vision_cache else None
    losses, grads = [], []
    for answer_logits in (False, True, True) if vision_cache else (False, True):
        model.zero_grad()
        loss = gpu.training_loss(model, batch, answer_logits=answer_logits, teacher=teacher)
        loss.backward()
        losses.append(loss.item())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    if cache is not None:
        cache.remove()
        assert cache.hits > 0
    for other_loss, other_grads in zip(losses[1:], grads[1:], strict=True):
        assert losses[0] == pytest.approx(other_loss, rel=1e-5)
        assert grads[0].keys() == other_grads.keys() and grads[0]
        for name, grad in grads[0].items():
            torch.testing.assert_close(other_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_answer_only_logits_give_the_models_loss_and_gradients():
    from transformers import Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(0)
    cfg = gpu.load_config("tiny")
    model = Qwen2_5_VLForConditionalGeneration._from_config(cfg, attn_implementation="sdpa")
    _plain_and_ours(model, gpu.synthetic_batch(cfg, 2, answer=True), teacher=False)


def _tiny_lora():
    """The tiny shape with LoRA on the LLM's q/v, adapters set off zero (so the adapter-
    disabled teacher and the student differ)."""
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(0)
    cfg = gpu.load_config("tiny")
    base = Qwen2_5_VLForConditionalGeneration._from_config(cfg, attn_implementation="sdpa")
    targets = r".*language_model.*\.(q_proj|v_proj)"
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=targets))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    return model, cfg


def test_our_step_with_the_teacher_gives_the_plain_steps_loss_and_gradients():
    model, cfg = _tiny_lora()
    batch = gpu.synthetic_batch(cfg, 2, answer=True)
    with torch.no_grad():
        plain = gpu.training_loss(model, batch, answer_logits=False, teacher=False)
        with_teacher = gpu.training_loss(model, batch, answer_logits=False, teacher=True)
    assert with_teacher.item() > plain.item() + 1e-4  # the KL term is there
    _plain_and_ours(model, batch, teacher=True)
    _plain_and_ours(model, batch, teacher=True, vision_cache=True)


def test_tiny_cli_run_writes_every_required_key(run_cli, tmp_path):
    out = tmp_path / "bench.json"
    result = run_cli(
        "bench",
        "gpu",
        "--shape",
        "tiny",
        "--device",
        "cpu",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--iters",
        "1",
        "--baseline-lines",
        "1",
        "--batch-size",
        "2",
        "--eval-batch-sizes",
        "2",
        "--ours-batch-sizes",
        "2",
        "--static-batch-sizes",
        "2",
        "--out",
        out,
        "--quiet",
    )
    assert result.code == 0, result.err
    assert "train/full" in result.out
    data = json.loads(out.read_text(encoding="utf-8"))
    for key in ("device", "versions", "date", "shape", "cases", "matmul"):
        assert key in data
    assert {"torch", "transformers", "peft", "cuda"} <= set(data["versions"])
    assert data["shape"]["name"] == "tiny" and data["shape"]["params"]["total"] > 0
    assert data["input"]["tokens_per_sample"] == 131
    for dotted in REQUIRED:
        section, key = dotted.split(".")
        value = data[section][key]
        assert isinstance(value, int | float) and math.isfinite(value), (dotted, value)
    assert "logits" in data["train"]["ours_method"]
    names = [c["name"] for c in data["cases"]]
    assert names == [
        "eval/baseline",
        "eval/ours-b2",
        "probe/vision-forward",
        "probe/vision-forward-segments",
        "train/lora",
        "train/lora-kl",
        "train/ours-b2",
        "train/ours-kl-b2",
        "train/ours-klr-b2",
        "train/ours-vc-b2",
        "train/ours-kl-vc-b2",
        "train/lora-gc",
        "train/llm-attn",
        "train/full",
        "train/ours-compiled-b2",
        "train/ours-planned-b4",
        "eval/ours-static-b2",
    ]
    assert all(c["status"] == "ok" for c in data["cases"]), data["cases"]
    rows = {c["name"]: c for c in data["cases"]}
    # LoRA: 4N FLOPs/token; the teacher pass adds 2N; full fine-tuning 6N
    n = data["shape"]["params"]["total"]
    assert rows["train/lora"]["flops_per_token"] == 4 * n
    assert rows["train/lora-kl"]["flops_per_token"] == 6 * n
    assert rows["train/full"]["flops_per_token"] == 6 * n
    # KL on one row in four (here 1 of 2 rows: batch 2): a teacher pass on that share only
    assert rows["train/ours-klr-b2"]["replay_rows"] == 1
    assert rows["train/ours-klr-b2"]["reference_rows_skipped"] > 0
    assert rows["train/ours-klr-b2"]["flops_per_token"] == 4 * n + 2 * n / 2
    assert math.isfinite(data["train"]["kl_replay_overhead"])
    # from the second step on the cached case never runs the tower: one miss per distinct line
    assert rows["train/ours-vc-b2"]["vision_cache"] == {"hits": 2, "misses": 2}
    assert rows["train/ours-kl-vc-b2"]["vision_cache"]["misses"] == 2
    assert data["train"]["ours_warm_tokens_per_s"] == rows["train/ours-vc-b2"]["tokens_per_s"]
    assert math.isfinite(data["train"]["warm_kl_overhead"])
    # the adapters are removed after each LoRA case: same trainable count every time
    assert rows["train/lora"]["trainable_params"] == rows["train/ours-b2"]["trainable_params"]
    # ours runs the tower's attention by window size, the plain step transformers' loop
    assert rows["train/ours-b2"]["vision_attention"] == "segments"
    assert rows["train/lora"]["vision_attention"] == "sdpa"
    assert "per window size" in rows["probe/vision-forward-segments"]["what"]
    assert math.isfinite(data["train"]["vision_segments_speedup"])
    assert data["train"]["best_case"].startswith("train/ours")
    # nothing caps memory here: the whole micro-batch in one pass, after one trial
    plan = rows["train/ours-planned-b4"]["memory_plan"]
    assert (plan["chunk_rows"], plan["gradient_checkpointing"], len(plan["trials"])) == (
        4,
        False,
        1,
    )
    assert data["train"]["planned_chunk_rows"] == 4


def test_checkpointing_switched_off_leaves_no_hooks():
    """The planned case's trials switch checkpointing on the bench's base model (the shared
    switch, models.checkpointing); off again, nothing may keep the frozen vision tower's
    output requiring grad for the cases after it."""
    from vlm_retain.models.checkpointing import set_checkpointing

    model, _ = _tiny_lora()
    base = model.get_base_model()
    set_checkpointing(base, True)
    set_checkpointing(base, True)
    assert len(base._require_grads_hooks) == 2  # not four: re-enabling does not stack them
    set_checkpointing(base, False)
    assert not getattr(base, "_require_grads_hooks", None)


def test_the_chunked_step_gives_the_whole_batch_loss_and_gradients():
    model, cfg = _tiny_lora()
    batch = gpu.synthetic_batch(cfg, 5, answer=True)
    objectives = gpu.our_objectives(model, teacher=True)
    results = []
    for rows in (5, 2):
        model.zero_grad()
        chunks, scales = gpu._chunked(batch, rows, objectives)
        assert len(chunks) == (1 if rows == 5 else 3)
        total = 0.0
        for chunk, scale in zip(chunks, scales, strict=True):
            loss = gpu.training_loss(
                model, chunk, answer_logits=True, teacher=True, objectives=objectives, scale=scale
            )
            loss.backward()
            total += loss.item()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((total, grads))
    (whole, whole_grads), (split, split_grads) = results
    assert split == pytest.approx(whole, rel=1e-5)
    assert whole_grads.keys() == split_grads.keys() and whole_grads
    for name, grad in whole_grads.items():
        torch.testing.assert_close(split_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_a_capped_memory_plan_splits_the_batch(run_cli, tmp_path):
    """On a card with less memory than the micro-batch needs in one pass (here a cap on the
    CPU's saved-tensor gauge) the planned case runs it in chunks."""
    out = tmp_path / "bench.json"
    result = run_cli(
        "bench", "gpu", "--shape", "tiny", "--device", "cpu", "--steps", "1", "--warmup", "0",
        "--only", "train/lora,train/ours-planned-b8", "--planned-batch-sizes", "8",
        "--memory-cap-gib", "0.02", "--out", out, "--quiet",
    )  # fmt: skip
    assert result.code == 0, result.err
    data = json.loads(out.read_text(encoding="utf-8"))
    row = {c["name"]: c for c in data["cases"]}["train/ours-planned-b8"]
    assert row["status"] == "ok", row
    plan = row["memory_plan"]
    assert plan["capacity_gib"] == 0.02
    assert plan["trials"][0] == {**plan["trials"][0], "rows": 8, "fits": False}
    assert plan["chunk_rows"] < 8 or plan["gradient_checkpointing"]
    assert "memory plan: chunks of" in row["what"]
    summary = data["train"]
    assert summary["planned_batch_size"] == 8 and summary["planned_trials"] == len(plan["trials"])
    assert math.isfinite(summary["planned_tokens_per_s"]) and summary["planned_speedup"] > 0


@pytest.mark.slow
def test_everything_on_at_the_large_batch(run_cli, tmp_path):
    """The combined cases (compiled, vision cache, KL on replay rows) run and are summarised."""
    out = tmp_path / "bench.json"
    cases = "train/ours-b4,train/ours-compiled-vc-b4,train/ours-klr-compiled-vc-b4"
    result = run_cli(
        "bench", "gpu", "--shape", "tiny", "--device", "cpu", "--steps", "1", "--warmup", "0",
        "--batch-size", "2", "--ours-batch-sizes", "2,4", "--only", cases, "--out", out, "--quiet",
    )  # fmt: skip
    assert result.code == 0, result.err
    data = json.loads(out.read_text(encoding="utf-8"))
    rows = {c["name"]: c for c in data["cases"]}
    assert list(rows) == cases.split(",")
    assert all(r["status"] == "ok" for r in rows.values()), rows
    klr = rows["train/ours-klr-compiled-vc-b4"]
    assert klr["replay_rows"] == 1 and klr["vision_cache"]["hits"] > 0
    assert "compiled" in klr["what"]
    assert math.isfinite(data["train"]["kl_replay_overhead_all_on"])
    assert data["train"]["best_case"] in rows


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA path")
def test_missing_cuda_is_recorded_not_fatal(run_cli, tmp_path):
    out = tmp_path / "bench.json"
    result = run_cli(
        "bench", "gpu", "--shape", "tiny", "--device", "cuda", "--only", "eval/baseline,train/lora",
        "--out", out, "--quiet",
    )  # fmt: skip
    assert result.code == 0, result.err
    data = json.loads(out.read_text(encoding="utf-8"))
    assert [c["name"] for c in data["cases"]] == ["eval/baseline", "train/lora"]
    assert all("CUDA is not available" in c["error"] for c in data["cases"])
    assert all(c["where"] and ":" in c["where"][-1] for c in data["cases"])  # where it broke
    assert data["eval"]["baseline_lines_per_s"] is None


def test_ours_is_refused_where_the_forward_cannot_keep_chosen_logits():
    """An older transformers (the device image's 5.17) fails deep in the head's indexing;
    the case must say which version is needed instead."""
    with pytest.raises(gpu.CaseError, match=r"transformers>=5\.24"):
        gpu._require_kept_logits(torch.nn.Linear(2, 2))
    from transformers import Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration._from_config(gpu.load_config("tiny"))
    gpu._require_kept_logits(model)  # this environment's transformers keeps them


def test_script_runs_without_the_package_installed(tmp_path):
    """The device machine may lack the installed package: the script finds ``src/`` itself."""
    code = (
        "import runpy, sys; sys.argv = ['bench_gpu.py', '--help']; "
        f"runpy.run_path({str(ROOT / 'benchmarks' / 'bench_gpu.py')!r}, run_name='__main__')"
    )
    # -S: no site processing, so the editable install's .pth is not read; the stdlib only
    proc = subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "--shape" in proc.stdout
