"""Every bad input is refused before the model runs, with an error that names the value and what was expected."""

import pytest
import torch

import xlstm_engine as xe

IDS = torch.tensor([[5, 6, 7], [8, 9, 10]])

CASES = {
    "empty prompt": (dict(input_ids=torch.zeros(2, 0, dtype=torch.long)), ValueError, r"S >= 1 .*got \(2, 0\)"),
    "cuda graph on the CPU": (dict(cuda_graph=True), ValueError, "cuda_graph=True needs the model on a CUDA device"),
    "no prompt and no state": (dict(input_ids=None), ValueError, "give input_ids"),
    "float ids": (dict(input_ids=IDS.float()), TypeError, "integer tensor"),
    "ids out of range": (dict(input_ids=torch.tensor([[5, 101]])), ValueError, r"\[0, 101\).*\[5, 101\]"),
    "negative ids": (dict(input_ids=torch.tensor([[-1, 5]])), ValueError, r"\[0, 101\)"),
    "row without tokens": (dict(attention_mask=torch.tensor([[1, 1, 1], [0, 0, 0]])), ValueError,
                           r"row\(s\) \[1\] hold no token"),
    "mask shape": (dict(attention_mask=torch.ones(2, 4, dtype=torch.long)), ValueError,
                   r"shape \(2, 3\) \(B, S\) like the input ids, got \(2, 4\)"),
    "mask values": (dict(attention_mask=torch.tensor([[1, 1, 2], [1, 1, 1]])), ValueError,
                    r"only 0 .* got 2 at \(row 0, token 2\)"),
    "mask dtype": (dict(attention_mask=torch.ones(2, 3)), TypeError,
                   "bool or integer tensor .* got dtype torch.float32"),
    "mask hole": (dict(attention_mask=torch.tensor([[1, 1, 1], [1, 0, 1]])), ValueError,
                  r"row 1 has a hole: pads at tokens 1..1"),
    "negative temperature": (dict(do_sample=True, temperature=-0.5), ValueError, "temperature must be .*got -0.5"),
    "nan temperature": (dict(do_sample=True, temperature=float("nan")), ValueError, "temperature"),
    "top_p 0": (dict(do_sample=True, top_p=0.0), ValueError, r"top_p must be a number in \(0, 1\].*got 0.0"),
    "top_p > 1": (dict(do_sample=True, top_p=1.5), ValueError, "top_p .*got 1.5"),
    "negative top_k": (dict(do_sample=True, top_k=-1), ValueError, "top_k must be an int >= 0.*got -1"),
    "float top_k": (dict(do_sample=True, top_k=2.5), ValueError, "top_k .*got 2.5"),
    "min_p > 1": (dict(do_sample=True, min_p=1.2), ValueError, r"min_p must be a number in \[0, 1\].*got 1.2"),
    "negative min_p": (dict(do_sample=True, min_p=-0.1), ValueError, "min_p .*got -0.1"),
    "penalty 0": (dict(repetition_penalty=0.0), ValueError, "repetition_penalty must be a number > 0.*got 0.0"),
    "negative max_new_tokens": (dict(max_new_tokens=-1), ValueError, "max_new_tokens must be an int >= 0, got -1"),
    "eos out of range": (dict(eos_token_id=500), ValueError, r"eos_token_id must be an id in \[0, 101\).*500"),
    "negative pad": (dict(pad_token_id=-1), ValueError, "pad_token_id must be an int >= 0, got -1"),
    "stop strings without tokenizer": (dict(stop_strings=["."]), ValueError, "stop_strings need a tokenizer"),
    "empty stop string": (dict(stop_strings=[""], tokenizer=object()), ValueError, "non-empty string"),
    "seed and generator": (dict(do_sample=True, seed=1, generator=torch.Generator()), ValueError,
                           "seed or generator, not both"),
    "generators per row": (dict(do_sample=True, generator=[torch.Generator()]), ValueError,
                           "one per row \\(2\\), got a list of 1"),
    "bad add_bos_token": (dict(add_bos_token="yes"), TypeError, "add_bos_token must be None, True or False"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_refused_by_name(case, make_large):
    kwargs, error, message = CASES[case]
    model = make_large()
    calls = []
    model.forward_with_state = lambda *a, **k: calls.append(a)  # nothing reaches the model
    kwargs = dict(input_ids=IDS, max_new_tokens=2) | kwargs
    with pytest.raises(error, match=message):
        xe.generate(model, **kwargs)
    assert not calls


class Decoder:
    def decode(self, ids):
        return " ".join(map(str, ids))


def test_no_pad_id_when_rows_can_finish_early(make_neurips):
    """The NeurIPS config has no token ids: rows that stop at different steps need a pad to fill with."""
    model = make_neurips()
    with pytest.raises(ValueError, match="neither it nor the model's config gives one"):
        xe.generate(model, IDS, max_new_tokens=2, stop_strings="x", tokenizer=Decoder())
    xe.generate(model, IDS[:1], max_new_tokens=2, eos_token_id=3)  # one row: nothing to fill
    xe.generate(model, IDS, max_new_tokens=2)  # no way to finish early: no pad needed


def test_add_bos_without_an_id(make_neurips):
    with pytest.raises(ValueError, match="add_bos_token=True needs a BOS id"):
        xe.generate(make_neurips(), IDS, max_new_tokens=1, add_bos_token=True)


def test_stream_takes_one_row(make_large):
    with pytest.raises(ValueError, match="stream continues one prompt"):
        xe.stream(make_large(), IDS, tokenizer=Decoder(), max_new_tokens=1)
    with pytest.raises(TypeError, match="tokenizer must have decode"):
        xe.stream(make_large(), IDS[:1], tokenizer=None, max_new_tokens=1)
