"""GRPO's KL term after SFT: the reference is the SFT policy, not the untuned base. TRL keeps a
frozen copy of the init adapter ('ref') when beta > 0; this pins that down, so a KL anchor asked
for in a config holds the run to what SFT learned."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600), pytest.mark.usefixtures("torch_one_thread")]

REPO = Path(__file__).resolve().parents[2]
LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"}


def _trained_adapter(base_path, folder):
    """A LoRA adapter with non-zero B (a fresh one equals the base), saved as PEFT saves one."""
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(base_path), dtype=torch.float32)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    peft.save_pretrained(str(folder))
    ids = torch.tensor([list(range(3, 30))])
    with torch.no_grad():
        tuned = peft(input_ids=ids).logits
        with peft.disable_adapter():
            untuned = peft(input_ids=ids).logits
    assert not torch.allclose(tuned, untuned, atol=1e-3)  # the adapter moves the model away from the base
    return folder


def test_the_kl_reference_after_sft_is_the_sft_policy(tiny_gemma_path, tmp_path):
    import torch

    from genevolve.training.config import config_from_file
    from genevolve.training.grpo import GRPOConfig, train_grpo
    from genevolve.training.grpo_trainer import build_trainer

    sft = _trained_adapter(tiny_gemma_path, tmp_path / "sft")
    cfg = config_from_file(GRPOConfig, REPO / "configs" / "grpo_tiny_cpu.yaml",
                           prompts=str(REPO / "configs" / "data" / "tiny_prompts.jsonl"),
                           agent={"system_prompt_path": str(REPO / "configs" / "data" / "tiny_system.md")},
                           model={"name": str(tiny_gemma_path), "dtype": "float32", "max_length": 512,
                                  "lora": LORA, "init_adapter": str(sft)},
                           run_dir=str(tmp_path / "run"), max_steps=1, save_steps=1, beta=0.04,
                           sdl={"enabled": False})
    trainer, _ = build_trainer(cfg)
    model = trainer.accelerator.unwrap_model(trainer.model)
    assert set(model.peft_config) == {"default", "ref"}
    params = dict(model.named_parameters())
    for name, p in params.items():
        if ".ref." in name:
            assert not p.requires_grad and torch.equal(p, params[name.replace(".ref.", ".default.")])
    del trainer
    # Step 1 samples from the SFT policy itself, so its KL to the reference is nil; against the untuned
    # base, which this adapter moves far from, it would not be.
    assert train_grpo(cfg, quiet=True)["state"] == "done"
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert row["kl_ref"] == pytest.approx(0.0, abs=1e-6)
