"""CPU decoding speed-ups of the local policies: packed oneDNN linears, weights in process memory."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from genevolve.policies import make_policy  # noqa: E402
from genevolve.policies.cpu_speed import lean_lora, pack_linears, packing_supported  # noqa: E402

needs_packing = pytest.mark.skipif(not packing_supported(), reason="this torch/CPU has no oneDNN bf16")


def _packed(model) -> int:
    return sum(1 for m in model.modules() if "_packed_weight" in m.__dict__)


@needs_packing
def test_packed_linears_give_the_same_numbers_and_fall_back_where_they_must():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 300), torch.nn.GELU(), torch.nn.Linear(300, 5000, bias=False),
                                torch.nn.Linear(5000, 7).float()).to(torch.bfloat16)
    model[3].float()  # an fp32 layer is left as it is
    one, group = torch.randn(1, 1, 64, dtype=torch.bfloat16), torch.randn(6, 1, 64, dtype=torch.bfloat16)
    rows = torch.randn(2, 9, 64, dtype=torch.bfloat16)
    with torch.no_grad():
        want_one, want_group, want_rows = model[:3](one), model[:3](group), model[:3](rows)
    handle = pack_linears(model)
    assert len(handle) == 2 and _packed(model) == 2
    with torch.no_grad():
        assert torch.equal(model[:3](one), want_one)  # the packed path, bit for bit
        assert torch.equal(model[:3](group), want_group)  # a lock-step group's turn: packed too
        assert torch.equal(model[:3](rows), want_rows)  # 18 rows (prefill-like): the plain path
    out = model[:3](one)  # autograd on: the plain path, so gradients reach the weights
    out.float().sum().backward()
    assert model[0].weight.grad is not None
    handle.remove()
    assert _packed(model) == 0 and not any("forward" in m.__dict__ for m in model.modules())
    model[2].weight.requires_grad_(False)  # a frozen base under a trainable layer
    assert len(pack_linears(model, frozen_only=True)) == 1 and "_packed_weight" in model[2].__dict__


@needs_packing
def test_hf_policy_packs_on_cpu_and_greedy_turns_are_unchanged(tiny_gemma_path, tmp_path):  # noqa: F811
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_gemma_path)
    lora = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"],
                                           init_lora_weights=False))
    lora.save_pretrained(tmp_path / "adapter")
    spec = f"hf:{tiny_gemma_path}?adapter={tmp_path / 'adapter'}&max_tokens=40&grammar=0"
    fast = make_policy(spec, dtype=torch.bfloat16, device="cpu")
    plain = make_policy(spec + "&pack=0", dtype=torch.bfloat16, device="cpu")
    assert _packed(fast.model) > 0 and _packed(plain.model) == 0
    messages = [{"role": "user", "content": "a poster of a red fox"}]
    ids = torch.tensor([fast.encode(messages)])
    kw = dict(max_new_tokens=40, do_sample=False, min_new_tokens=40, eos_token_id=None, pad_token_id=0)
    with torch.no_grad():
        a = fast.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kw)
        b = plain.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kw)
    assert a.shape[1] == ids.shape[1] + 40
    assert a.tolist() == b.tolist()


def test_lean_lora_gives_peft_numbers_bit_for_bit_and_steps_aside_for_training(tiny_gemma_path):  # noqa: F811
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_gemma_path, dtype=torch.bfloat16)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(base, LoraConfig(r=4, target_modules=targets, init_lora_weights=False)).eval()
    vocab = model.config.vocab_size
    inputs = {rows: torch.randint(0, vocab, (1, rows)) for rows in (1, 9, 40)}  # a token, a draft, a prefill

    def logits():
        with torch.no_grad():
            return {rows: model(input_ids=ids).logits for rows, ids in inputs.items()}

    want = logits()
    handle = lean_lora(model)
    assert len(handle) == 7 * model.config.num_hidden_layers
    got = logits()
    for rows in inputs:
        assert torch.equal(got[rows], want[rows]), rows
    with model.disable_adapter(), torch.no_grad():  # peft's own switch still works
        assert not torch.equal(model(input_ids=inputs[9]).logits, want[9])
    loss = model(input_ids=inputs[9]).logits.float().sum()  # autograd on: peft's forward, gradients flow
    loss.backward()
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.grad is not None for p in lora_b)
    handle.remove()
    assert not any("forward" in m.__dict__ for m in model.modules())
    assert torch.equal(logits()[9], want[9])


def _file_backed(tensor) -> str | None:
    """The file whose memory mapping holds ``tensor``'s data, if any (Linux)."""
    ptr = tensor.data_ptr()
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split()
        lo, hi = (int(x, 16) for x in parts[0].split("-"))
        if lo <= ptr < hi:
            return parts[5] if len(parts) > 5 and parts[5].startswith("/") else None
    return None


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="needs /proc (Linux)")
def test_cpu_weights_live_in_process_memory_not_in_a_mapped_file(tiny_gemma_path):  # noqa: F811
    # The file's own dtype (fp32), so loading could keep it mapped rather than convert it.
    policy = make_policy(f"hf:{tiny_gemma_path}", dtype=torch.float32, device="cpu")
    mapped = {name: _file_backed(p) for name, p in policy.model.named_parameters()}
    assert not any(mapped.values()), [n for n, f in mapped.items() if f][:3]
