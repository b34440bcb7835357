"""SFT: which tokens carry loss, the trainer's fused-head loss equals full-logit cross-entropy, and loss falls."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[2]

SYSTEM = "You plan images."
USER = "draw a red cat on a poster"
CALL = '<think>look it up</think>\n<tool_call>{"name": "search", "arguments": {"queries": ["red cat"]}}</tool_call>'
TOOL = "<tool_response>\nA red cat sleeps on a sofa.\n</tool_response>"
ANSWER = '<think>enough</think>\n<answer>{"gen_prompt": "a red cat, poster style", "reference_images": []}</answer>'
MESSAGES = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER},
            {"role": "assistant", "content": CALL}, {"role": "user", "content": TOOL},
            {"role": "assistant", "content": ANSWER}]


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: thread hand-off costs more than it saves on shared cores
    yield
    torch.set_num_threads(old)


def _decode_where(tokenizer, ids, mask):
    return tokenizer.decode([t for t, m in zip(ids, mask) if m], skip_special_tokens=False)


def _load(path):
    from genevolve.training.modeling import ModelConfig, load_for_training

    return load_for_training(ModelConfig(name=str(path)))


def test_assistant_tokens_carry_loss_and_nothing_else(tiny_gemma_path):
    from genevolve.training.data import ConversationEncoder

    _, tok, proc = _load(tiny_gemma_path)
    enc = ConversationEncoder(tok, proc).encode(MESSAGES)
    assert len(enc.input_ids) == len(enc.loss_mask) == len(enc.decision_mask)
    # Loss tokens spell exactly the two assistant turns, each with the template's end-of-turn marker.
    assert _decode_where(tok, enc.input_ids, enc.loss_mask) == CALL + "<end_of_turn>" + ANSWER + "<end_of_turn>"
    context = _decode_where(tok, enc.input_ids, [not m for m in enc.loss_mask])
    for text in (SYSTEM, USER, TOOL):  # system, user and tool-response tokens are all context
        assert text in context
    # Decision tokens: the bodies of the <tool_call> and <answer> blocks, nothing else.
    decision = _decode_where(tok, enc.input_ids, enc.decision_mask)
    assert decision == ('{"name": "search", "arguments": {"queries": ["red cat"]}}'
                        '{"gen_prompt": "a red cat, poster style", "reference_images": []}')
    assert all(m for d, m in zip(enc.decision_mask, enc.loss_mask) if d)
    # Segment-wise tokens render back to the whole conversation.
    assert tok.decode(enc.input_ids, skip_special_tokens=False) == ConversationEncoder(tok).render(MESSAGES)


def test_image_tokens_are_context_for_a_vlm(tiny_qwen3vl_path, tmp_path):
    import torch
    from PIL import Image

    from genevolve.training.data import ConversationEncoder
    from genevolve.training.modeling import collate

    Image.new("RGB", (64, 48), (200, 30, 30)).save(tmp_path / "ref.png")
    model, tok, proc = _load(tiny_qwen3vl_path)
    msgs = [dict(m) for m in MESSAGES]
    msgs[1]["content"] = "<image>" + USER
    enc = ConversationEncoder(tok, proc).encode(msgs, [tmp_path / "ref.png"])
    image_id = tok.convert_tokens_to_ids("<|image_pad|>")
    n_image = sum(t == image_id for t in enc.input_ids)
    assert n_image > 1 and "pixel_values" in enc.vision
    assert not any(m for t, m in zip(enc.input_ids, enc.loss_mask) if t == image_id)
    assert _decode_where(tok, enc.input_ids, enc.loss_mask) == CALL + "<|im_end|>" + ANSWER + "<|im_end|>"
    batch = collate([enc], tok.pad_token_id)
    loss = _fused_loss(model, batch)  # the SFT trainer's loss: TRL's fused LM head, pixels included
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    # The vision tower is frozen: no gradient reaches it.
    assert all(p.grad is None for n, p in model.named_parameters() if "visual" in n)
    assert any(p.grad is not None for n, p in model.named_parameters() if "language_model" in n)


def _fused_loss(model, batch):
    """Mean loss over assistant tokens through TRL's fused LM head, as ``SFTTrainer`` computes it."""
    from trl.trainer.utils import add_fused_lm_head

    if not hasattr(model, "_fused_head"):
        add_fused_lm_head(model.get_base_model() if hasattr(model, "peft_config") else model)
        model._fused_head = True
    inputs = {k: v for k, v in batch.items() if k not in ("loss_mask", "decision_mask")}
    return model(**inputs, use_cache=False, fused_lm_head=True).loss


def test_trainer_loss_is_full_logit_cross_entropy_on_assistant_tokens(tiny_gemma_path):
    """TRL's fused head (log-probs in chunks, no full logits) gives the plain full-logit
    cross-entropy over exactly the assistant tokens, and the same gradients."""
    import torch
    import torch.nn.functional as F

    from genevolve.training.data import ConversationEncoder
    from genevolve.training.modeling import collate

    model, tok, proc = _load(tiny_gemma_path)
    enc = ConversationEncoder(tok, proc)
    short = MESSAGES[:3]
    batch = collate([enc.encode(MESSAGES), enc.encode(short)], tok.pad_token_id)  # padded batch
    assert ((batch["labels"] != -100) == batch["loss_mask"]).all()  # labels mark the assistant tokens only

    def full():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
        labels = batch["labels"][:, 1:]
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)).float(), labels.reshape(-1),
                               ignore_index=-100)

    def positions():  # the default trainer loss: logits only where an assistant token is predicted
        from types import SimpleNamespace

        from genevolve.training.sft_trainer import GenevolveSFTTrainer

        fake = SimpleNamespace(args=SimpleNamespace(average_tokens_across_devices=False))
        inputs = {k: v for k, v in batch.items() if k not in ("loss_mask", "decision_mask")}
        return GenevolveSFTTrainer._loss_at_label_positions(fake, model, inputs)

    def loss_and_grads(fn):
        model.zero_grad()
        loss = fn()
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    reference, grads_full = loss_and_grads(full)
    for name, fn in (("fused", lambda: _fused_loss(model, batch)), ("loss_positions", positions)):
        loss, grads = loss_and_grads(fn)
        assert torch.allclose(loss, reference, atol=1e-5), (name, float(loss), float(reference))
        assert len(grads) == len(grads_full) > 0
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(grads, grads_full)), name


@pytest.mark.slow
def test_sft_loss_falls_and_best_checkpoint_is_kept(tmp_path):
    from genevolve.training.config import config_from_file
    from genevolve.training.metrics import read_metrics, read_status
    from genevolve.training.sft import SFTConfig, train_sft

    cfg = config_from_file(SFTConfig, REPO / "configs" / "sft_tiny_cpu.yaml",
                           train_data=str(REPO / "configs" / "data" / "tiny_sft.jsonl"),
                           run_dir=str(tmp_path / "run"), max_steps=25, eval_every=5)
    result = train_sft(cfg, quiet=True)
    metrics = read_metrics(tmp_path / "run")
    assert result["state"] == "done" and [m["step"] for m in metrics] == list(range(1, 26))
    first, last = metrics[0]["loss"], metrics[-1]["loss"]
    assert last < 0.5 * first, (first, last)
    assert all(m["tokens"] > 0 and m["tokens_per_s"] > 0 for m in metrics)  # every step counts what it trained on
    evals = [m["eval_loss"] for m in metrics if "eval_loss" in m]
    assert len(evals) == 5 and evals[-1] < evals[0]
    ckpts = tmp_path / "run" / "checkpoints"
    best = (ckpts / "best").read_text().strip()
    best_step = int(best.split("-")[1])
    best_eval = min((m for m in metrics if "eval_loss" in m), key=lambda m: m["eval_loss"])
    assert best_step == best_eval["step"] and (ckpts / best / "config.json").is_file()
    assert read_status(tmp_path / "run")["state"] == "done"
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "trainer: sft" in saved and json.dumps(25) in saved


@pytest.mark.slow
def test_full_logit_baseline_trains_the_same_steps(tmp_path):
    """``logits: full`` (plain HF loss over full logits), the default (logits at the loss positions)
    and TRL's fused head log the same run."""
    from genevolve.training.config import config_from_file
    from genevolve.training.metrics import read_metrics
    from genevolve.training.sft import SFTConfig, train_sft

    runs = {}
    for logits in ("full", "loss_positions", "fused"):
        cfg = config_from_file(SFTConfig, REPO / "configs" / "sft_tiny_cpu.yaml",
                               train_data=str(REPO / "configs" / "data" / "tiny_sft.jsonl"),
                               run_dir=str(tmp_path / logits), max_steps=3, eval_every=3, logits=logits)
        assert train_sft(cfg, quiet=True)["state"] == "done"
        runs[logits] = read_metrics(tmp_path / logits)
    for other in ("loss_positions", "fused"):
        for a, b in zip(runs["full"], runs[other], strict=True):
            for key in ("loss", "grad_norm", "eval_loss", "tokens"):
                assert (a.get(key) is None) == (b.get(key) is None)
                if a.get(key) is not None:
                    assert abs(a[key] - b[key]) < 1e-4 * max(1.0, abs(a[key])), (other, a["step"], key, a[key], b[key])
    with pytest.raises(ValueError, match="logits: 'sparse' is not loss_positions, fused or full"):
        train_sft(config_from_file(SFTConfig, REPO / "configs" / "sft_tiny_cpu.yaml", run_dir=str(tmp_path / "bad"),
                                   logits="sparse"), quiet=True)


@pytest.mark.slow
def test_image_text_sft_trains_and_checkpoints(tiny_qwen3vl_path, tmp_path):
    """A Qwen3-VL policy through SFTTrainer: pixel values reach the model, the checkpoint is written."""
    from PIL import Image

    from genevolve.training.config import config_from_file
    from genevolve.training.metrics import read_metrics
    from genevolve.training.sft import SFTConfig, train_sft

    Image.new("RGB", (64, 48), (200, 30, 30)).save(tmp_path / "ref.png")
    rows = [json.loads(line) for line in (REPO / "configs" / "data" / "tiny_sft.jsonl").read_text().splitlines()]
    for row in rows:
        user = next(m for m in row["messages"] if m["role"] == "user")
        user["content"] = "<image>" + user["content"]
        row["images"] = [str(tmp_path / "ref.png")]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = config_from_file(SFTConfig, REPO / "configs" / "sft_tiny_cpu.yaml", train_data=str(tmp_path / "data.jsonl"),
                           run_dir=str(tmp_path / "run"), max_steps=2, eval_every=2,
                           model={"name": str(tiny_qwen3vl_path), "dtype": "float32", "max_length": 1024})
    assert train_sft(cfg, quiet=True)["state"] == "done"
    rows = read_metrics(tmp_path / "run")
    assert [r["step"] for r in rows] == [1, 2] and rows[-1]["eval_loss"] > 0
    assert (tmp_path / "run" / "checkpoints" / "checkpoint-2" / "model.safetensors").is_file()


def test_shipped_configs_load():
    import yaml

    from genevolve.training.config import config_from_file
    from genevolve.training.grpo import GRPOConfig
    from genevolve.training.sft import SFTConfig

    configs = sorted((REPO / "configs").glob("*.yaml"))
    trainers = [p for p in configs if p.name.startswith(("sft_", "grpo_"))]
    assert len(trainers) == 7
    for path in trainers:
        cfg = config_from_file(SFTConfig if path.name.startswith("sft_") else GRPOConfig, path)
        assert cfg.model.name and cfg.max_steps > 0
        if path.name.startswith("grpo_"):
            assert cfg.group_size == 6 and cfg.sdl.enabled and cfg.sdl.gate == 0.84 and cfg.sdl.capacity == 500
    ds = json.loads((REPO / "configs" / "deepspeed_zero3.json").read_text())
    assert ds["zero_optimization"]["stage"] == 3
    acc = yaml.safe_load((REPO / "configs" / "accelerate_zero3.yaml").read_text())
    assert acc["distributed_type"] == "DEEPSPEED"
    with pytest.raises(ValueError, match="unknown SFTConfig field"):
        config_from_file(SFTConfig, REPO / "configs" / "sft_tiny_cpu.yaml", learning_rate=1.0)


def test_a_run_folders_own_config_starts_another_run(tmp_path):
    """The config.yaml a run writes at its start loads back: its trainer is checked, and its
    checkpoint folder and its own guide store follow the run_dir it is given."""
    import yaml

    from genevolve.training.config import config_from_file, config_to_dict
    from genevolve.training.grpo import GRPOConfig
    from genevolve.training.metrics import RunFiles
    from genevolve.training.sft import SFTConfig

    first = config_from_file(GRPOConfig, REPO / "configs" / "grpo_tiny_cpu.yaml", run_dir=str(tmp_path / "first"),
                             sdl={"store_path": str(tmp_path / "first" / "guides.db")})
    RunFiles(tmp_path / "first").save_config({"trainer": "grpo", **config_to_dict(first)})
    saved = tmp_path / "first" / "config.yaml"
    assert yaml.safe_load(saved.read_text())["output_dir"] == str(tmp_path / "first" / "checkpoints")

    again = config_from_file(GRPOConfig, saved, run_dir=str(tmp_path / "second"))
    assert again.output_dir == str(tmp_path / "second" / "checkpoints")
    assert again.sdl.store_path == str(tmp_path / "second" / "guides.db")  # not the first run's guides
    assert config_from_file(GRPOConfig, saved).sdl.store_path == str(tmp_path / "first" / "guides.db")
    assert again.group_size == first.group_size and again.sdl.gate == first.sdl.gate
    with pytest.raises(ValueError, match=r"config of a grpo run; pass it to `train grpo`, not `train sft`"):
        config_from_file(SFTConfig, saved)
