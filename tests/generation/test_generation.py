"""generate() against plain loops written here: greedy decoding, the decode path's logits, eos and padding of
finished rows, the streamer protocol, and the BOS rule of xLSTM-7B."""

import pytest
import torch

import xlstm_engine as xe
from xlstm_engine.generation import Decoding
from xlstm_engine.testing import assert_close


def plain_greedy(model, ids: torch.Tensor, n: int) -> torch.Tensor:
    """argmax over a full forward of the growing sequence, no state: the definition of greedy decoding."""
    with torch.no_grad():
        for _ in range(n):
            logits, _ = model.forward_with_state(ids)
            ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids


def test_greedy_equals_a_plain_loop(model):
    ids = torch.randint(3, 101, (3, 7))
    out = xe.generate(model, ids, max_new_tokens=9, add_bos_token=False)
    assert out.shape == (3, 16) and torch.equal(out, plain_greedy(model, ids, 9))


def test_greedy_with_bos_equals_a_plain_loop_from_bos(make_large):
    """xLSTM Large's config has bos 0: the model sees BOS first, the result is the caller's ids + new tokens."""
    model = make_large()
    ids = torch.randint(3, 101, (2, 5))
    out = xe.generate(model, ids, max_new_tokens=6)
    reference = plain_greedy(model, torch.cat([torch.zeros(2, 1, dtype=torch.long), ids], dim=1), 6)
    assert torch.equal(out, reference[:, 1:])


def test_decode_path_logits_equal_the_parallel_forward(model):
    """Teacher forcing through the decode loop's own step (a state allocated once, updated in place)."""
    ids = torch.randint(0, 101, (2, 12))
    with torch.no_grad():
        parallel, _ = model.forward_with_state(ids)
    run = Decoding(model, ids[:, :4], max_new_tokens=0, add_bos_token=False)
    addresses = [t.data_ptr() for t in xe.generation.state.flatten_state(run.state).values()]
    stepped = [run.logits]
    for t in range(4, 12):
        stepped.append(run.step(ids[:, t]))
    assert_close("decode-path logits", parallel[:, 3:].float(), torch.stack(stepped, dim=1), ratio=1e-5)
    assert addresses == [t.data_ptr() for t in xe.generation.state.flatten_state(run.state).values()]


def test_eos_per_row_pads_finished_rows(make_large):
    model = make_large()
    ids = torch.randint(3, 101, (3, 4))
    free = xe.generate(model, ids, max_new_tokens=8, add_bos_token=False)
    eos = free[0, 4 + 2].item()  # row 0 ends at its 3rd new token (or before, if it had this token earlier)
    out = xe.generate(model, ids, max_new_tokens=8, eos_token_id=eos, pad_token_id=99, add_bos_token=False)
    stops = []
    for row in range(3):
        new = free[row, 4:].tolist()
        stops.append(new.index(eos) + 1 if eos in new else len(new))
        assert out[row, 4:].tolist() == (new[:stops[-1]] + [99] * 8)[:out.shape[1] - 4], row
    assert out.shape[1] - 4 == max(stops) and stops[0] <= 3
    assert torch.equal(out[:, :4], ids)


def test_run_stops_when_every_row_is_finished(scripted):
    model = scripted([[5, 6, 7, 8, 9], [5, 7, 9, 9, 9]], prompt_len=2, vocab_size=20)
    out = xe.generate(model, torch.ones(2, 2, dtype=torch.long), max_new_tokens=10, eos_token_id=[7, 9],
                      pad_token_id=0)
    assert out[:, 2:].tolist() == [[5, 6, 7], [5, 7, 0]]
    assert len(model.fed) == 3  # the prefill and two steps: the last token is never fed


def test_pad_defaults_to_the_first_eos_without_a_config_pad(scripted):
    model = scripted([[4, 3, 5], [4, 4, 4]], prompt_len=1, vocab_size=20)
    out = xe.generate(model, torch.ones(2, 1, dtype=torch.long), max_new_tokens=3, eos_token_id=[3, 8])
    assert out[:, 1:].tolist() == [[4, 3, 3], [4, 4, 4]]


def test_output_is_an_ordinary_tensor_of_the_input_dtype(make_large):
    model = make_large()
    ids = torch.randint(3, 101, (2, 3), dtype=torch.int32)
    out = xe.generate(model, ids, max_new_tokens=2)
    assert out.dtype == torch.int32 and not out.is_inference()
    assert torch.equal(xe.generate(model, ids, max_new_tokens=0), ids)


def test_streamer_protocol(scripted):
    class Recorder:
        def __init__(self):
            self.calls = []

        def put(self, value):
            self.calls.append(value.tolist())

        def end(self):
            self.calls.append("end")

    model, recorder = scripted([[7, 8, 9]], prompt_len=2, vocab_size=20), Recorder()
    xe.generate(model, torch.tensor([[1, 2]]), max_new_tokens=3, streamer=recorder)
    assert recorder.calls == [[[1, 2]], [7], [8], [9], "end"]


def test_transformers_text_streamer(scripted, bpe_tokenizer, capsys):
    transformers = pytest.importorskip("transformers")
    text = " the cat sat."
    ids = bpe_tokenizer.encode(text).ids
    model = scripted([ids], prompt_len=1, vocab_size=bpe_tokenizer.get_vocab_size())
    prompt = torch.tensor([bpe_tokenizer.encode("on").ids[:1]])
    xe.generate(model, prompt, max_new_tokens=len(ids), streamer=transformers.TextStreamer(bpe_tokenizer,
                                                                                           skip_prompt=True))
    assert capsys.readouterr().out == text + "\n"


def test_bos_rule(make_large, make_neurips, scripted):
    model = make_large()
    calls = []
    forward = model.forward_with_state
    model.forward_with_state = lambda ids, *a, **k: calls.append(ids.clone()) or forward(ids, *a, **k)
    ids = torch.randint(3, 101, (2, 4))
    on = xe.generate(model, ids, max_new_tokens=3)
    assert calls[0][:, 0].tolist() == [0, 0] and torch.equal(calls[0][:, 1:], ids)
    with_bos = torch.cat([torch.zeros(2, 1, dtype=torch.long), ids], dim=1)
    assert torch.equal(xe.generate(model, with_bos, max_new_tokens=3), torch.cat([with_bos[:, :1], on], dim=1))
    calls.clear()
    xe.generate(model, with_bos, max_new_tokens=1)
    assert torch.equal(calls[0], with_bos)  # a row that starts with BOS gets no second one
    calls.clear()
    xe.generate(model, ids, max_new_tokens=1, add_bos_token=False)
    assert torch.equal(calls[0], ids)
    calls.clear()
    xe.generate(model, ids, max_new_tokens=1, state=xe.prefill(model, ids[:, :2]))
    assert len(calls) == 2 and torch.equal(calls[1], ids)  # continuing from a state: never a BOS
    # the NeurIPS config has no BOS: off unless asked, with an id
    neurips = scripted([[1]], prompt_len=2, vocab_size=20)
    xe.generate(neurips, torch.tensor([[4, 5]]), max_new_tokens=1)
    xe.generate(neurips, torch.tensor([[4, 5]]), max_new_tokens=1, add_bos_token=True, bos_token_id=3)
    assert [f.tolist() for f in neurips.fed] == [[[4, 5]], [[3, 4, 5]]]
