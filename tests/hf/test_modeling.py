"""xlstm_engine.hf.xLSTMForCausalLM / xLSTMModel forward: against our core, against transformers' own classes on the
same weights, and what transformers' own ignores (padding)."""

import pytest
import torch
import torch.nn.functional as F
from hf_helpers import VOCAB, make_model, prompts, tiny_config

import xlstm_engine as xe
from xlstm_engine.hf import large_config, xLSTMForCausalLM, xLSTMModel, xLSTMStateCache
from xlstm_engine.testing import assert_close


def test_state_dict_is_the_cores_and_modules_are_shared(model):
    core = xe.xLSTMLarge(large_config(model.config))
    core.load_state_dict(model.state_dict(), strict=True)  # the Hugging Face names, fused layout
    assert model.core.backbone.blocks[0] is model.backbone.blocks[0]
    assert model.core.lm_head is model.lm_head
    assert model.get_input_embeddings() is model.core.get_input_embeddings()


@pytest.mark.parametrize("S", [1, 7, 40])
@torch.no_grad()
def test_logits_equal_core_and_transformers(model, theirs, S):
    core = xe.xLSTMLarge(large_config(model.config), model.runtime)
    core.load_state_dict(model.state_dict())
    ids = prompts(2, S)
    logits = model(ids).logits
    assert logits.dtype == torch.float32 and logits.shape == (2, S, VOCAB)
    assert_close("logits vs core", core(ids)[0], logits, ratio=1e-6)
    assert_close("logits vs transformers", theirs(ids, use_cache=False).logits, logits, ratio=1e-5)
    assert_close("logits_to_keep=1", logits[:, -1:], model(ids, logits_to_keep=1).logits, ratio=1e-6)


@torch.no_grad()
def test_cache_continues_like_one_forward(model, theirs):
    ids = prompts(3, 30)
    full = model(ids, use_cache=False)
    assert full.cache is None
    out = model(ids[:, :20])
    cache = out.cache
    assert isinstance(cache, xLSTMStateCache) and cache.get_seq_length() == 20
    pieces, states = [out.logits], []
    for piece in (ids[:, 20:21], ids[:, 21:]):
        out = model(piece, cache=cache)
        assert out.cache is cache and out.cache_params is cache
        pieces.append(out.logits)
        states.append(cache.state)
    assert cache.get_seq_length() == 30
    assert_close("continued logits", full.logits, torch.cat(pieces, 1), ratio=1e-5)
    hf_cache = theirs(ids, use_cache=True).cache
    for layer, (C, n, m) in cache.rnn_state.items():
        assert_close(f"C[{layer}]", hf_cache.rnn_state[layer][0], C, ratio=1e-5)
        assert_close(f"n[{layer}]", hf_cache.rnn_state[layer][1], n, ratio=1e-5)
        assert_close(f"m[{layer}]", hf_cache.rnn_state[layer][2], m, ratio=1e-5)
    # a state taken out of the cache stays valid (the cache rebinds, never writes); the former keyword name works
    again = model(ids[:, 21:], cache_params=xLSTMStateCache(states[0], 21))
    assert_close("cache_params", pieces[-1], again.logits, ratio=1e-6)


@torch.no_grad()
def test_state_is_float32_in_a_bfloat16_model():
    model = make_model().to(torch.bfloat16)
    out = model(prompts(2, 9))
    assert out.logits.dtype == torch.float32
    assert all(t.dtype == torch.float32 for block in out.cache.state for t in block)


@torch.no_grad()
def test_hidden_states_match_transformers(model, theirs):
    ids = prompts(2, 11)
    out = model(ids, output_hidden_states=True)
    ref = theirs(ids, output_hidden_states=True, use_cache=False).hidden_states
    assert len(out.hidden_states) == len(ref) == model.config.num_hidden_layers + 1
    for idx, (h, r) in enumerate(zip(out.hidden_states, ref, strict=True)):
        assert h.shape == (2, 11, model.config.hidden_size)
        assert_close(f"hidden_states[{idx}]", r, h, ratio=1e-5)
    base = model.backbone(ids, output_hidden_states=True, use_cache=False)
    assert torch.equal(base.last_hidden_state, out.hidden_states[-1])
    assert isinstance(model.backbone, xLSTMModel) and base.cache is None
    # return_dict=False: the same values, as a tuple in field order (logits, cache, hidden_states)
    as_tuple = model(ids, output_hidden_states=True, return_dict=False)
    assert torch.equal(as_tuple[0], out.logits) and len(as_tuple[2]) == len(out.hidden_states)


@torch.no_grad()
def test_inputs_embeds_equal_ids(model):
    ids = prompts(2, 13)
    mask = torch.ones(2, 13, dtype=torch.long)
    mask[0, :4] = 0
    by_ids = model(ids, attention_mask=mask, output_hidden_states=True)
    by_embeds = model(inputs_embeds=model.get_input_embeddings()(ids), attention_mask=mask, output_hidden_states=True)
    assert torch.equal(by_ids.logits, by_embeds.logits)
    for a, b in zip(by_ids.cache.state, by_embeds.cache.state, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(by_ids.hidden_states, by_embeds.hidden_states, strict=True))


def test_loss_matches_transformers(model, theirs):
    ids = prompts(3, 17)
    labels = ids.clone()
    labels[1, 5:9] = -100
    loss = model(ids, labels=labels).loss
    assert_close("loss", theirs(ids, labels=labels, use_cache=False).loss, loss, ratio=1e-5)
    logits = model(ids).logits
    manual = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
    assert_close("loss vs F.cross_entropy", manual, loss, ratio=1e-6)
    loss.backward()
    assert model.lm_head.weight.grad is not None
    model.zero_grad(set_to_none=True)


def left_and_right_padded(lengths, S, pad=1):
    """Rows of `lengths` tokens in a batch of width S: row 0 left-padded, the others right-padded."""
    rows = [prompts(1, n)[0] for n in lengths]
    ids = torch.full((len(rows), S), pad)
    mask = torch.zeros(len(rows), S, dtype=torch.long)
    for b, row in enumerate(rows):
        span = slice(S - len(row), S) if b == 0 else slice(0, len(row))
        ids[b, span], mask[b, span] = row, 1
    return rows, ids, mask


@torch.no_grad()
def test_padded_batch_equals_each_row_alone(model):
    rows, ids, mask = left_and_right_padded([9, 23, 4], S=23)
    out = model(ids, attention_mask=mask)
    for b, row in enumerate(rows):
        alone = model(row[None])
        real = mask[b].bool()
        assert_close(f"row {b} logits", alone.logits[0], out.logits[b, real], ratio=1e-5)
        for block, (padded, single) in enumerate(zip(out.cache.state, alone.cache.state, strict=True)):
            assert_close(f"row {b} C[{block}]", single.C[0], padded.C[b], ratio=1e-5)


def test_padded_loss_equals_loss_of_the_rows(model):
    rows, ids, mask = left_and_right_padded([9, 23, 4], S=23)
    loss = model(ids, attention_mask=mask, labels=ids).loss  # pads are labelled with the pad id, not -100
    per_token = [F.cross_entropy(model(row[None]).logits[0, :-1], row[1:], reduction="none") for row in rows]
    assert_close("padded loss", torch.cat(per_token).mean(), loss, ratio=1e-5)


@torch.no_grad()
def test_bad_inputs_are_named(model):
    ids = prompts(2, 5)
    with pytest.raises(TypeError, match="attention_maks"):
        model(ids, attention_maks=torch.ones(2, 5))
    with pytest.raises(ValueError, match="attention_mask must be"):
        model(ids, attention_mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match="hole"):
        model(ids, attention_mask=torch.tensor([[1, 0, 1, 1, 1], [1, 1, 1, 1, 1]]))
    with pytest.raises(TypeError, match="xLSTMStateCache"):
        model(ids, cache=(torch.zeros(1),))
    with pytest.raises(ValueError, match=r"batch|shape"):
        model(ids, cache=model(prompts(3, 2)).cache)
    with pytest.raises(ValueError, match=r"\[0, 97\)"):
        model(torch.full((1, 3), VOCAB))
    with pytest.raises(ValueError, match="exactly one"):
        model(ids, inputs_embeds=torch.zeros(2, 5, 128))
    with pytest.raises(ValueError, match="logits_to_keep"):
        model(ids, labels=ids, logits_to_keep=1)


def test_config_fields_map_onto_architecture_and_runtime():
    config = tiny_config(chunk_size=32, inference_state_dtype="bfloat16", chunkwise_kernel="chunkwise--triton_xl_chunk",
                         max_inference_chunksize=64, output_logit_soft_cap=20.0)
    model = xLSTMForCausalLM(config)
    assert model.runtime.chunk_size == 32 and model.runtime.max_inference_chunksize == 64
    assert model.runtime.state_dtype == torch.bfloat16 and model.runtime.mlstm_backend == "auto"
    assert model.backbone.large_config.output_logit_soft_cap == 20.0 and model.core.config.embedding_dim == 128
    model.runtime = model.runtime.replace(chunk_size=8)
    assert model.core.runtime.chunk_size == 8 and model.backbone.runtime.chunk_size == 8


@torch.no_grad()
def test_from_core_shares_the_cores_modules(tmp_path):
    core = xe.xLSTMLarge(xe.xLSTMLargeConfig(embedding_dim=64, num_heads=2, num_blocks=2, vocab_size=VOCAB),
                         xe.RuntimeOptions(chunk_size=8))
    model = xLSTMForCausalLM.from_core(core)
    assert model.lm_head is core.lm_head and model.runtime.chunk_size == 8 and model.config.hidden_size == 64
    ids = prompts(2, 10)
    assert_close("from_core", core(ids)[0], model(ids).logits, ratio=1e-6)
    base = xLSTMModel.from_core(core)
    assert base.blocks is core.backbone.blocks and not hasattr(base, "lm_head")


@torch.no_grad()
def test_resize_token_embeddings_round_trips(tmp_path):
    model = make_model(seed=6)
    model.resize_token_embeddings(VOCAB + 4)
    ids = torch.tensor([[VOCAB + 3, 5, 7]])
    logits = model(ids).logits
    assert logits.shape == (1, 3, VOCAB + 4) and model.config.vocab_size == VOCAB + 4
    assert_close("core after resize", model.core(ids)[0], logits, ratio=1e-6)
    model.save_pretrained(tmp_path)
    assert torch.equal(xLSTMForCausalLM.from_pretrained(tmp_path)(ids).logits, logits)
