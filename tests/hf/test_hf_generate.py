"""generate() and pipeline() on xlstm_engine.hf.xLSTMForCausalLM: greedy and sampling against transformers' own model
on the same weights, beam search against a plain beam search over our core, padded batches against their rows."""

import pytest
import torch
from hf_helpers import VOCAB, prompts

from xlstm_engine.hf import xLSTMStateCache
from xlstm_engine.ops import mLSTMState

NEW = 9


@torch.no_grad()
def test_greedy_equals_transformers(model, theirs):
    prompt = prompts(2, 11)
    kwargs = dict(max_new_tokens=NEW, do_sample=False, eos_token_id=None)
    ours = model.generate(prompt, **kwargs)
    assert ours.shape == (2, 11 + NEW) and torch.equal(ours[:, :11], prompt)
    assert torch.equal(ours, theirs.generate(prompt, **kwargs))


@torch.no_grad()
def test_generate_from_inputs_embeds(model):
    prompt = prompts(2, 6)
    kwargs = dict(max_new_tokens=NEW, do_sample=False, eos_token_id=None)
    by_embeds = model.generate(inputs_embeds=model.get_input_embeddings()(prompt), **kwargs)  # new tokens only
    assert torch.equal(by_embeds, model.generate(prompt, **kwargs)[:, 6:])


@torch.no_grad()
def test_sampling_equals_transformers(model, theirs):
    """The same logits (to rounding) and the same random draws give the same samples."""
    prompt = prompts(3, 6)
    kwargs = dict(max_new_tokens=NEW, do_sample=True, temperature=1.5, top_k=0, eos_token_id=None)
    torch.manual_seed(1234)
    ours = model.generate(prompt, **kwargs)
    torch.manual_seed(1234)
    ref = theirs.generate(prompt, **kwargs)
    assert torch.equal(ours, ref)
    torch.manual_seed(4321)
    assert not torch.equal(ours, model.generate(prompt, **kwargs))  # it samples


@torch.no_grad()
def reference_beam_search(core, prompt: torch.Tensor, num_beams: int, steps: int):
    """Plain beam search on one prompt [S]: keep the `num_beams` continuations with the largest sum of
    log-probabilities, ties to the lower (beam, token) index; no length penalty, no EOS. Returns the final beams
    [num_beams, steps] and their scores [num_beams], best first."""
    logits, state = core(prompt[None])  # a single beam to start: the prompt
    scores = torch.zeros(1)
    tokens = torch.zeros(1, 0, dtype=torch.long)
    for step in range(steps):
        log_probs = torch.log_softmax(logits[:, -1].float(), dim=-1)  # [beams, V]
        candidates = (scores[:, None] + log_probs).flatten()
        best = torch.sort(candidates, descending=True, stable=True).indices[:num_beams]  # stable: lower index wins
        beam, token = best // VOCAB, best % VOCAB
        scores, tokens = candidates[best], torch.cat([tokens[beam], token[:, None]], dim=1)
        if step < steps - 1:
            state = tuple(type(block)(*(t[beam] for t in block)) for block in state)  # each beam's own history
            logits, state = core(token[:, None], state=state)
    return tokens, scores


@torch.no_grad()
def test_beam_search_equals_plain_beam_search(model):
    prompt, beams = prompts(2, 8), 3
    out = model.generate(prompt, max_new_tokens=NEW, num_beams=beams, num_return_sequences=beams, do_sample=False,
                         eos_token_id=None, length_penalty=0.0, return_dict_in_generate=True, output_scores=True)
    sequences = out.sequences.view(2, beams, -1)
    for b in range(2):
        tokens, scores = reference_beam_search(model.core, prompt[b], beams, NEW)
        assert torch.equal(sequences[b, :, 8:], tokens), f"row {b}"
        torch.testing.assert_close(out.sequences_scores.view(2, beams)[b], scores, rtol=1e-5, atol=1e-5)
    # the beams differ from greedy decoding somewhere (else the test would not see a wrong cache reordering)
    greedy = model.generate(prompt, max_new_tokens=NEW, do_sample=False, eos_token_id=None)[:, 8:]
    assert not torch.equal(sequences[:, 0, 8:], greedy) or not torch.equal(sequences[:, 1, 8:], greedy)


def test_cache_reorders_rows():
    C = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 2, 3, 5).contiguous()
    state = (mLSTMState(C, C[:, :, :, 0], C[:, :, 0, 0]),)
    cache = xLSTMStateCache(state, seqlen_offset=7)
    cache.reorder_cache(torch.tensor([2, 2, 0, 3]))
    assert cache.state[0].C[:, 0, 0, 0].tolist() == [2, 2, 0, 3] and cache.state[0].m[:, 0].tolist() == [2, 2, 0, 3]
    assert cache.get_seq_length() == 7 and state[0].C[:, 0, 0, 0].tolist() == [0, 1, 2, 3]  # the old tensors stay


def left_padded(lengths: list[int], pad: int = 1):
    rows = [prompts(1, n)[0] for n in lengths]
    S = max(lengths)
    ids = torch.full((len(rows), S), pad)
    mask = torch.zeros(len(rows), S, dtype=torch.long)
    for b, row in enumerate(rows):
        ids[b, S - len(row):], mask[b, S - len(row):] = row, 1
    return rows, ids, mask


@pytest.mark.parametrize("num_beams", [1, 2])
@torch.no_grad()
def test_left_padded_batch_equals_each_row_alone(model, num_beams):
    rows, ids, mask = left_padded([5, 12, 9])
    kwargs = dict(max_new_tokens=NEW, do_sample=False, eos_token_id=None, num_beams=num_beams, pad_token_id=1)
    batch = model.generate(ids, attention_mask=mask, **kwargs)
    for b, row in enumerate(rows):
        alone = model.generate(row[None], **kwargs)
        assert torch.equal(batch[b, ids.shape[1]:], alone[0, len(row):]), f"row {b}"


@torch.no_grad()
def test_eos_stops_generation(model):
    prompt = prompts(1, 7)
    free = model.generate(prompt, max_new_tokens=NEW, do_sample=False, eos_token_id=None)[0, 7:]
    eos = free[3].item()
    stop = (free == eos).nonzero()[0].item()  # its first occurrence
    out = model.generate(prompt, max_new_tokens=NEW, do_sample=False, eos_token_id=eos, pad_token_id=1)
    assert torch.equal(out[0, 7:], free[:stop + 1])


@torch.no_grad()
def test_generate_continues_from_a_returned_cache(model):
    """return_dict_in_generate hands back the cache; a second generate on the full sequence feeds only what the
    state has not seen (get_seq_length), as with transformers' attention caches."""
    prompt = prompts(2, 6)
    kwargs = dict(do_sample=False, eos_token_id=None)
    first = model.generate(prompt, max_new_tokens=4, return_dict_in_generate=True, **kwargs)
    assert isinstance(first.cache, xLSTMStateCache) and first.cache.get_seq_length() == 6 + 4 - 1
    second = model.generate(first.sequences, cache=first.cache, max_new_tokens=5, **kwargs)
    assert torch.equal(second, model.generate(prompt, max_new_tokens=9, **kwargs))


def bpe_tokenizer():
    """A small BPE (`tokenizers`), trained here, as a transformers PreTrainedTokenizerFast; ids 0-2 are the model's
    bos, pad and eos."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    sentences = ["the cat sat on the mat", "a dog ran in the park", "the bird sang a song at dawn",
                 "cats and dogs play together", "the sun rose over the quiet town"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.Metaspace(), decoders.Metaspace()
    tok.train_from_iterator(sentences, trainers.BpeTrainer(vocab_size=VOCAB - 7,
                                                           special_tokens=["<s>", "<pad>", "</s>", "<unk>"]))
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", pad_token="<pad>",
                                                eos_token="</s>", unk_token="<unk>")


def test_text_generation_pipeline(model):
    import transformers

    tokenizer = bpe_tokenizer()
    pipe = transformers.pipeline("text-generation", model=model, tokenizer=tokenizer)
    text = pipe("the cat", max_new_tokens=NEW, do_sample=False)[0]["generated_text"]
    ids = tokenizer("the cat", return_tensors="pt").input_ids
    with torch.no_grad():
        expected = model.generate(ids, max_new_tokens=NEW, do_sample=False)
    assert expected.shape[1] > ids.shape[1]
    assert text == tokenizer.decode(expected[0], skip_special_tokens=True) and text.startswith("the cat")
