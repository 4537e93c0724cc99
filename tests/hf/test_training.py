"""Training through the transformers classes: activation checkpointing, PEFT LoRA on our modules."""

import copy

import pytest
import torch
from hf_helpers import make_model, prompts

from xlstm_engine.hf import xLSTMBlock, xLSTMForCausalLM
from xlstm_engine.testing import assert_close


def grads_and_recomputes(model, ids, mask, labels):
    """Gradients of every parameter for one loss, and how often each block's mLSTM layer ran."""
    calls = []
    hooks = [block.mlstm_layer.register_forward_hook(lambda *_, i=i: calls.append(i))
             for i, block in enumerate(model.backbone.blocks)]
    model.zero_grad(set_to_none=True)
    loss = model(ids, attention_mask=mask, labels=labels).loss
    loss.backward()
    for hook in hooks:
        hook.remove()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}, calls


@pytest.mark.filterwarnings("ignore:.*gradient_checkpointing:FutureWarning")  # transformers 5.24 renames it
def test_gradient_checkpointing_recomputes_blocks_with_equal_gradients():
    model = make_model(seed=2).train()
    assert model.supports_gradient_checkpointing and all(isinstance(b, xLSTMBlock) for b in model.backbone.blocks)
    ids = prompts(2, 19)
    mask = torch.ones_like(ids)
    mask[1, :5] = 0  # padding goes through the checkpointed blocks too
    loss, grads, calls = grads_and_recomputes(model, ids, mask, ids)
    assert calls == [0, 1]
    model.gradient_checkpointing_enable()
    assert model.is_gradient_checkpointing
    loss_ckpt, grads_ckpt, calls_ckpt = grads_and_recomputes(model, ids, mask, ids)
    assert sorted(calls_ckpt) == [0, 0, 1, 1]  # each block ran again in the backward
    assert_close("loss", loss, loss_ckpt, ratio=1e-6)
    for name, grad in grads.items():
        assert_close(f"grad {name}", grad, grads_ckpt[name], ratio=1e-5)
    with torch.no_grad():  # no backward, no recompute (and generation still works)
        model.generate(ids[:, :3], max_new_tokens=2, do_sample=False)
    model.gradient_checkpointing_disable()
    assert grads_and_recomputes(model, ids, mask, ids)[2] == [0, 1]


def test_lora_trains_and_merges():
    peft = pytest.importorskip("peft")
    base = make_model(seed=4)
    frozen = {name: p.detach().clone() for name, p in base.named_parameters()}
    targets = ["qkv_opreact", "out_proj", "proj_up_gate_z", "proj_down"]  # our Linear modules, by name
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets, task_type="CAUSAL_LM")
    model = peft.get_peft_model(base, config)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    ids = prompts(4, 16)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(8):
        loss = model(input_ids=ids, labels=ids).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses
    model.eval()
    with torch.no_grad():
        adapted = model(input_ids=ids).logits
        assert not torch.allclose(adapted, base_logits(frozen, ids), atol=1e-3)  # the adapters changed the model
        merged = model.merge_and_unload()
        assert type(merged) is xLSTMForCausalLM and not any("lora_" in n for n, _ in merged.named_parameters())
        assert_close("merged logits", adapted, merged(ids).logits, ratio=1e-5)
        generated = merged.generate(ids[:, :4], max_new_tokens=3, do_sample=False)
        assert generated.shape == (4, 7)
    changed = [name for name, p in merged.named_parameters() if not torch.equal(p, frozen[name])]
    assert changed and all(any(t in name for t in targets) for name in changed)


@torch.no_grad()
def base_logits(state_dict, ids):
    model = make_model(seed=0)
    model.load_state_dict(state_dict)
    return model(ids).logits


def test_deepcopy_keeps_modules_shared():
    """A model (blocks turned into xLSTMBlock, modules shared with the core) copies as a whole."""
    model = make_model(seed=5)
    clone = copy.deepcopy(model)
    with torch.no_grad():
        clone.lm_head.weight.zero_()
        ids = prompts(1, 4)
        assert not torch.equal(clone(ids).logits, model(ids).logits)
        assert clone.core.lm_head is clone.lm_head and clone.core.lm_head is not model.lm_head
        assert clone.backbone._large.blocks is clone.backbone.blocks
