"""Stop strings and streaming text, with tokenizers trained here and a scripted model whose output is known."""

import torch

import xlstm_engine as xe
from xlstm_engine.generation import TextDelta
from xlstm_engine.testing import assert_close

TEXT = " the cat sat on the mat. café 😀 the end."


def first_completing(tokenizer, ids: list[int], stop: str) -> int:
    """The number of tokens up to the one whose text completes `stop` (brute force over prefixes)."""
    return next(n for n in range(1, len(ids) + 1) if stop in tokenizer.decode(ids[:n]))


def test_multibyte_characters_are_split_across_tokens(bpe_tokenizer):
    """The premise of the streaming tests: "é" and the emoji are several byte tokens each."""
    ids = bpe_tokenizer.encode(TEXT).ids
    partial = [n for n in range(1, len(ids)) if bpe_tokenizer.decode(ids[:n]).endswith("\ufffd")]
    assert len(partial) >= 3


def test_text_delta_never_yields_half_a_character(bpe_tokenizer, word_tokenizer):
    for tokenizer, text in ((bpe_tokenizer, TEXT), (word_tokenizer, "the cat sat on the mat . the end")):
        ids = tokenizer.encode(text).ids
        delta = TextDelta(tokenizer)
        pieces = [delta.push(t) for t in ids] + [delta.flush()]
        assert "".join(pieces) == tokenizer.decode(ids)
        assert not any("\ufffd" in p for p in pieces)


def test_stream_equals_the_decoded_ids(scripted, bpe_tokenizer):
    ids = bpe_tokenizer.encode(TEXT).ids
    model = scripted([ids], prompt_len=2, vocab_size=bpe_tokenizer.get_vocab_size())
    events = list(xe.stream(model, [5, 6], tokenizer=bpe_tokenizer, max_new_tokens=len(ids)))
    assert "".join(e.text for e in events) == bpe_tokenizer.decode(ids) == TEXT
    assert [t for e in events for t in e.token_ids] == ids
    assert any(len(e.token_ids) > 1 for e in events)  # a split character comes in one event with its tokens
    assert not any("\ufffd" in e.text for e in events)
    assert events[-1].finish_reason == "length" and all(e.finish_reason is None for e in events[:-1])


def test_stream_from_a_real_model(make_large, bpe_tokenizer):
    """Random byte tokens: whatever they decode to (U+FFFD for invalid UTF-8 included), the stream joins to it."""
    model = make_large(vocab_size=bpe_tokenizer.get_vocab_size())
    events = list(xe.stream(model, "the cat", tokenizer=bpe_tokenizer, max_new_tokens=12, do_sample=True, seed=1))
    new = [t for e in events for t in e.token_ids]
    assert len(new) == 12 and "".join(e.text for e in events) == bpe_tokenizer.decode(new)
    out = xe.generate(model, torch.tensor([bpe_tokenizer.encode("the cat").ids]), max_new_tokens=12,
                      do_sample=True, seed=1)
    assert out[0, -12:].tolist() == new


def test_stream_returns_the_state_after_every_token(make_large, bpe_tokenizer):
    model = make_large(vocab_size=bpe_tokenizer.get_vocab_size())
    prompt = bpe_tokenizer.encode("the dog").ids
    events = list(xe.stream(model, prompt, tokenizer=bpe_tokenizer, max_new_tokens=5, return_state=True))
    new = [t for e in events for t in e.token_ids]
    after = xe.prefill(model, torch.tensor([prompt + new]))
    assert_close("logits after the stream", after.logits, events[-1].state.logits)  # the float32 bound


def test_stop_string_cuts_after_the_completing_token(scripted, bpe_tokenizer):
    ids = bpe_tokenizer.encode(TEXT).ids
    for stop in ("sat", "t o", "é", "😀", "mat. c", " the end."):
        n = first_completing(bpe_tokenizer, ids, stop)
        model = scripted([ids], prompt_len=1, vocab_size=bpe_tokenizer.get_vocab_size())
        out = xe.generate(model, torch.tensor([[3]]), max_new_tokens=len(ids), stop_strings=[stop, "zzz"],
                          tokenizer=bpe_tokenizer)
        assert out[0, 1:].tolist() == ids[:n], stop


def test_stop_strings_per_row_pad_finished_rows(scripted, word_tokenizer):
    texts = ["the cat sat on the mat . the end", "a dog met a cat on the log . the end"]
    scripts = [word_tokenizer.encode(t).ids for t in texts]
    model = scripted(scripts, prompt_len=1, vocab_size=word_tokenizer.get_vocab_size())
    out = xe.generate(model, torch.tensor([[1], [1]]), max_new_tokens=12, stop_strings="on the",
                      tokenizer=word_tokenizer, pad_token_id=0)
    stops = [first_completing(word_tokenizer, s, "on the") for s in scripts]
    assert stops == [5, 7] and out.shape == (2, 1 + 7)
    assert out[0, 1:].tolist() == [*scripts[0][:5], 0, 0] and out[1, 1:].tolist() == scripts[1][:7]


def test_a_stop_string_begun_in_the_prompt_counts(scripted, word_tokenizer):
    prompt = word_tokenizer.encode("the cat sat on").ids
    script = word_tokenizer.encode("the mat . the end").ids
    model = scripted([script], prompt_len=len(prompt), vocab_size=word_tokenizer.get_vocab_size())
    out = xe.generate(model, torch.tensor([prompt]), max_new_tokens=5, stop_strings=["on the"],
                      tokenizer=word_tokenizer)
    assert out[0, len(prompt):].tolist() == script[:1]


def test_stream_finish_reasons(scripted, bpe_tokenizer):
    ids = bpe_tokenizer.encode(TEXT).ids
    model = scripted([ids], prompt_len=1, vocab_size=bpe_tokenizer.get_vocab_size())
    events = list(xe.stream(model, [3], tokenizer=bpe_tokenizer, max_new_tokens=40, stop_strings="mat"))
    assert events[-1].finish_reason == "stop_string" and "".join(e.text for e in events).endswith("mat")
    events = list(xe.stream(model, [3], tokenizer=bpe_tokenizer, max_new_tokens=40, eos_token_id=ids[3]))
    assert events[-1].finish_reason == "eos" and [t for e in events for t in e.token_ids] == ids[:4]
