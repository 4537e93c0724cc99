"""When rows stop: an eos id, or a stop string completed by the last token.

This is the one place where the decode loop waits for the device (to learn whether every row is done, and to
decode the tokens for stop strings); nothing else in a step reads a value back, so the step itself can later be
captured in a CUDA graph, and these checks moved (e.g. every k steps).
"""

import torch


class StopCheck:
    """Tracks which rows are finished.

    eos: ids that end a row (the eos token is kept in the output). stop_strings: a row ends after the token whose
    text completes one of them (that token kept), found by decoding only each row's last few tokens: enough for
    the longest string's UTF-8 bytes plus one (a token holds at least one byte), so a step costs the same however
    long the output. tails: each row's last prompt tokens, so a string that starts in the prompt counts too.
    """

    def __init__(self, eos: tuple[int, ...], stop_strings, tokenizer, batch_size: int, device: torch.device,
                 tails: list[list[int]] | None = None):
        self.finished = torch.zeros(batch_size, dtype=torch.bool, device=device)
        self.eos = torch.tensor(eos, device=device) if eos else None
        if isinstance(stop_strings, str):
            stop_strings = [stop_strings]
        self.strings = list(stop_strings or [])
        if any(not isinstance(s, str) or not s for s in self.strings):
            raise ValueError(f"stop_strings must be a non-empty string or a list of them, got {stop_strings!r}")
        if self.strings and not callable(getattr(tokenizer, "decode", None)):
            raise ValueError("stop_strings need a tokenizer (anything with .decode(list[int]) -> str) to read the "
                             f"tokens as text; got tokenizer={tokenizer!r}")
        self.tokenizer = tokenizer
        self.window = max((len(s.encode()) for s in self.strings), default=0) + 1
        self.tails = [list(t[-self.window:]) for t in tails] if tails else [[] for _ in range(batch_size)]
        self.by_string: set[int] = set()  # rows that a stop string ended

    @property
    def can_finish(self) -> bool:
        """Whether a row can end before max_new_tokens."""
        return self.eos is not None or bool(self.strings)

    def update(self, tokens: torch.Tensor) -> bool:
        """Record the step's tokens [B]; returns True when every row is finished."""
        if not self.can_finish:
            return False  # no host sync: the loop runs max_new_tokens steps
        if self.eos is not None:
            self.finished |= torch.isin(tokens, self.eos)
        if not self.strings:
            return bool(self.finished.all())
        host_tokens, host_finished = torch.stack([tokens, self.finished.long()]).tolist()
        stopped = []
        for row, (token, done) in enumerate(zip(host_tokens, host_finished, strict=True)):
            if done:
                continue
            tail = self.tails[row]
            tail.append(token)
            del tail[:-self.window]
            if self._completes(tail):
                stopped.append(row)
        if stopped:
            self.by_string.update(stopped)
            self.finished[stopped] = True
        return all(done or row in self.by_string for row, done in enumerate(host_finished))

    def _completes(self, tail: list[int]) -> bool:
        """Whether the text of `tail` holds a stop string that ends in its last token's text."""
        text = self.tokenizer.decode(tail)
        before = self.tokenizer.decode(tail[:-1]).rstrip("\ufffd")  # a split character is not text yet
        common = 0  # the text before the last token, as far as it agrees with `text`
        for a, b in zip(before, text, strict=False):
            if a != b:
                break
            common += 1
        return any(text.find(s, max(0, common - len(s) + 1)) != -1 for s in self.strings)

    def reasons(self) -> list[str]:
        """Why each row ended: "stop_string", "eos", or "length" (max_new_tokens)."""
        finished = self.finished.tolist()
        return ["stop_string" if row in self.by_string else "eos" if done else "length"
                for row, done in enumerate(finished)]
