"""stream(): one prompt's continuation as events of new tokens and the text they add.

    for event in xe.stream(model, "The capital of", tokenizer=tok, max_new_tokens=50):
        print(event.text, end="", flush=True)

The text deltas joined equal tokenizer.decode(new ids). A character whose bytes are split across tokens is never
yielded half: text whose decoded tail ends in U+FFFD (an incomplete UTF-8 sequence) is held back until the
character completes (its tokens then come in one event).
"""

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .generate import Decoding
from .state import PromptState


@dataclass(frozen=True)
class StreamEvent:
    """token_ids: the new tokens this event covers (several when text was held back for a split character; none
    on the last event). text: the text they add. On the last event only: finish_reason ("eos", "stop_string" or
    "length") and, with return_state=True, `state`: a PromptState after every token, to continue from."""

    token_ids: tuple[int, ...]
    text: str
    finish_reason: str | None = None
    state: PromptState | None = None


class TextDelta:
    """Incremental decoding with bounded work per token: decode a window of the last tokens (those since the
    last emitted text, plus the previous chunk for context, which tokenizers need for spaces), and emit what it
    adds beyond the text of that context."""

    def __init__(self, tokenizer):
        self.tokenizer, self.ids, self.start, self.emitted = tokenizer, [], 0, 0

    def push(self, token: int) -> str:
        """Add a token; returns the text it completes ("" while a character is incomplete)."""
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids[self.start:])
        if text.endswith("\ufffd"):
            return ""
        return self._emit(text)

    def flush(self) -> str:
        """The text held back at the end (an incomplete character decodes as U+FFFD, as decode gives it)."""
        if self.emitted == len(self.ids):
            return ""
        return self._emit(self.tokenizer.decode(self.ids[self.start:]))

    def _emit(self, text: str) -> str:
        context = self.tokenizer.decode(self.ids[self.start:self.emitted])
        self.start, self.emitted = self.emitted, len(self.ids)
        return text[len(context):]


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of `text` with a `tokenizers.Tokenizer` (encode -> Encoding) or a transformers tokenizer
    (encode -> list[int])."""
    encoded = tokenizer.encode(text)
    return list(encoded.ids if hasattr(encoded, "ids") else encoded)


def stream(model, input_ids, *, tokenizer, return_state: bool = False, **kwargs) -> Iterator[StreamEvent]:
    """Continue ONE prompt and yield StreamEvents as tokens come.

    Args:
        input_ids: a string (encoded with `tokenizer`), a list of ids, or a tensor [S] or [1, S]; None with
            state=a PromptState of one row.
        tokenizer: anything with decode(list[int]) -> str (a `tokenizers.Tokenizer`, a transformers tokenizer).
        return_state: put on the last event a PromptState after every token (one more step of the model), e.g.
            to continue a conversation without feeding the history again.
        **kwargs: those of `generate` (max_new_tokens, do_sample, temperature, eos_token_id, stop_strings, ...).
    """
    if not callable(getattr(tokenizer, "decode", None)):
        raise TypeError(f"tokenizer must have decode(list[int]) -> str, got {type(tokenizer).__name__}")
    if isinstance(input_ids, str):
        input_ids = encode(tokenizer, input_ids)
    if isinstance(input_ids, list | tuple):
        input_ids = torch.tensor(input_ids, dtype=torch.long).reshape(1, -1)
    if isinstance(input_ids, torch.Tensor) and input_ids.ndim == 1:
        input_ids = input_ids[None]
    if isinstance(input_ids, torch.Tensor) and input_ids.ndim == 2 and input_ids.shape[0] != 1:
        raise ValueError(f"stream continues one prompt (input_ids [1, S] or [S]), got shape {tuple(input_ids.shape)}; "
                         "use generate for a batch")
    run = Decoding(model, input_ids, tokenizer=tokenizer, **kwargs)
    if run.batch_size != 1:
        raise ValueError(f"stream continues one row; the state has {run.batch_size}")
    return _events(run, TextDelta(tokenizer), return_state)


def _events(run: Decoding, text: TextDelta, return_state: bool) -> Iterator[StreamEvent]:
    pending = []  # tokens whose text is held back
    for tokens in run:
        token = tokens.item()  # a host sync per token: the text needs it anyway
        pending.append(token)
        delta = text.push(token)
        if delta:
            yield StreamEvent(tuple(pending), delta)
            pending = []
    yield StreamEvent(tuple(pending), text.flush(), finish_reason=run.stop.reasons()[0],
                      state=run.prompt_state() if return_state else None)
