"""generate(): the prompt prefilled once, then one token per step from a state updated in place.

`Decoding` holds one run: it checks every argument before the model runs, prefills, and its `__iter__` is the
decode loop, a Python generator of the tokens of each step that generate(), stream() and the CLI all consume.
"""

import torch

from .cuda_graph import StepGraph
from .inputs import prepare_prompt, resolve_bos, resolve_token_ids, seen_tokens
from .protocol import check_model, fingerprint
from .sampling import SamplingParams, make_generators, pick, process_logits
from .state import PromptState, own_state, run_prefill
from .stopping import StopCheck


class Decoding:
    """One generation run over a batch of B rows (arguments as in `generate`).

    After construction the prompt is prefilled: `logits` [B, V] float32 are the next-token logits, `state` the
    model state (ours, updated in place). Iterating yields the tokens [B] (int64, on the model's device) of each
    step; finished rows get the pad id. `stop.reasons()` says afterwards why each row ended.
    """

    def __init__(self, model, input_ids=None, attention_mask=None, *, max_new_tokens: int, do_sample=False,
                 temperature=1.0, top_k=None, top_p=None, min_p=None, repetition_penalty=None, eos_token_id=None,
                 pad_token_id=None, stop_strings=None, tokenizer=None, generator=None, seed=None, state=None,
                 add_bos_token=None, bos_token_id=None, cuda_graph=False):
        check_model(model)
        if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
        if input_ids is None and not isinstance(state, PromptState):
            raise ValueError("give input_ids (a prompt), or state=a PromptState whose logits start the output")
        self.model, self.max_new_tokens = model, max_new_tokens
        self.params = SamplingParams(do_sample, temperature, top_k, top_p, min_p, repetition_penalty)
        vocab = model.config.vocab_size
        self.eos, self.pad = resolve_token_ids(model, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
                                               vocab_size=vocab)
        bos = resolve_bos(model, add_bos_token, bos_token_id, fresh=state is None)
        prompt = None if input_ids is None else prepare_prompt(input_ids, attention_mask, vocab, bos)
        if prompt is not None:
            batch, device = prompt.ids.shape[0], prompt.ids.device
        else:
            batch, device = state.batch_size, state.logits.device
        self.generator = make_generators(generator, seed, batch, device)
        tails = None
        if stop_strings and prompt is not None:
            tails = [row[mask].tolist() for row, mask in zip(prompt.user_ids, prompt.user_mask, strict=True)]
        self.stop = StopCheck(self.eos, stop_strings, tokenizer, batch, device, tails)
        if self.stop.can_finish and batch > 1 and self.pad is None:
            raise ValueError("rows can finish at different steps (eos_token_id or stop_strings), and a finished row "
                             "is filled with pad_token_id, but neither it nor the model's config gives one")
        if cuda_graph and device.type != "cuda":
            raise ValueError(f"cuda_graph=True needs the model on a CUDA device, got {device}")
        self.batch_size, self.device = batch, device
        self.cuda_graph, self.graph = cuda_graph, None
        self._prefill(prompt, state)

    @torch.inference_mode()
    def _prefill(self, prompt, state) -> None:
        given = None
        if state is not None:
            given, self.logits = own_state(self.model, state, self.batch_size, self.device)
        if prompt is not None:
            self.state, self.logits = run_prefill(self.model, prompt, given)
        else:
            self.state = given
        self.seen = seen_tokens(prompt, self.batch_size, self.model.config.vocab_size, self.device) \
            if self.params.penalizes else None

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed tokens [B] (one per row) from the state, in place; returns the next logits [B, V] float32 (with
        cuda_graph, the graph's own tensor, overwritten by the next step)."""
        if self.cuda_graph:
            if self.graph is None:  # captured on first use, once the prefill has filled the state
                self.graph = StepGraph(self.model, self.state, self.batch_size, self.device)
            return self.graph(tokens)
        logits, _ = self.model.forward_with_state(tokens[:, None], self.state, logits_to_keep=1, inplace=True)
        return logits[:, -1].float()

    @torch.inference_mode()  # entered around each step of the generator only, not while the caller runs
    def __iter__(self):
        logits = self.logits
        for i in range(self.max_new_tokens):
            tokens = pick(process_logits(logits, self.params, self.seen), self.params, self.generator)
            if self.pad is not None:
                tokens = torch.where(self.stop.finished, self.pad, tokens)
            if self.seen is not None:
                self.seen.scatter_(1, tokens[:, None], True)
            done = self.stop.update(tokens)
            self.last_tokens = tokens
            yield tokens
            if done or i == self.max_new_tokens - 1:
                return  # the last token is not fed (as transformers): nothing reads its logits
            logits = self.logits = self.step(tokens)

    def prompt_state(self) -> PromptState:
        """After the loop: the state after every token so far, as a PromptState of ordinary tensors (a copy; feeds
        the last token). For one row (stream, the CLI chat): in a batch, rows that finished early were fed pads and
        hold no useful state."""
        if getattr(self, "last_tokens", None) is not None:
            self.logits = self.step(self.last_tokens)
            self.last_tokens = None
        return PromptState(self.state, self.logits, fingerprint(self.model)).clone()  # out of inference mode

def generate(model, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None, *,
             max_new_tokens: int, do_sample: bool = False, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, min_p: float | None = None, repetition_penalty: float | None = None,
             eos_token_id: int | list[int] | None = None, pad_token_id: int | None = None,
             stop_strings: str | list[str] | None = None, tokenizer=None,
             generator: torch.Generator | list[torch.Generator] | None = None, seed: int | None = None,
             state=None, streamer=None, add_bos_token: bool | None = None,
             bos_token_id: int | None = None, cuda_graph: bool = False) -> torch.Tensor:
    """Continue each row of a batch of prompts (xLSTMLarge, xLSTMLMModel: any model of the stateful contract).

    Args:
        input_ids: [B, S] token ids (int64/int32). None: continue from `state` (a PromptState) alone.
        attention_mask: [B, S] 1 = token, 0 = pad; left or right padding (each row's 1s contiguous).
        max_new_tokens: at most this many new tokens per row.
        do_sample: sample (temperature, top_k, top_p, min_p apply); else greedy. temperature 0 is greedy too.
        repetition_penalty: transformers' (> 1 discourages tokens the row has had: its real prompt tokens and
            what it generated); applies to greedy decoding too.
        eos_token_id: id(s) that end a row (default: the model config's; [] for none). The eos is kept.
        pad_token_id: fills finished rows (default: the config's, else the first eos).
        stop_strings: a row also ends after the token whose text completes one of these (kept); needs
            `tokenizer` (anything with .decode(list[int]) -> str).
        generator: a torch.Generator for all rows, or a list of B (row b then gets exactly what it gets alone
            with that generator); seed: makes one. On the logits' device.
        state: a PromptState (from prefill) or a model state to continue from (not changed: generate works on a
            copy); input_ids, if given, are prefilled on top of it.
        streamer: an object with put(ids) and end() (transformers' streamer protocol, e.g. TextStreamer): put
            gets the prompt [B, S], then the tokens [B] of each step.
        add_bos_token: None (default): on when the model's config has bos_token_id (xLSTM Large). A fresh
            prompt row whose first token is not BOS gets BOS before it, for the model only (not returned).
            Never when continuing from a state. bos_token_id overrides the config's.
        cuda_graph: replay the decode step (all blocks and the logits) as one CUDA graph, captured at the first
            step for this batch; same tokens, far fewer launches. CUDA only. Default: False.

    Returns:
        [B, S + n] ids (int dtype of input_ids): the prompt as given (its padding layout kept), then the n new
        tokens of each row in columns S.. (n <= max_new_tokens: the run stops once every row is finished).
        With input_ids None: the new tokens [B, n] alone.
    """
    run = Decoding(model, input_ids, attention_mask, max_new_tokens=max_new_tokens, do_sample=do_sample,
                   temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                   repetition_penalty=repetition_penalty, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
                   stop_strings=stop_strings, tokenizer=tokenizer, generator=generator, seed=seed, state=state,
                   add_bos_token=add_bos_token, bos_token_id=bos_token_id, cuda_graph=cuda_graph)
    if streamer is not None and input_ids is not None:
        streamer.put(input_ids.cpu())
    new = []
    for tokens in run:
        new.append(tokens)
        if streamer is not None:
            streamer.put(tokens.cpu())
    if streamer is not None:
        streamer.end()
    # assembled outside inference mode: the result is an ordinary tensor (usable in autograd, e.g. as targets)
    new = torch.stack(new, dim=1) if new else torch.zeros(run.batch_size, 0, dtype=torch.long, device=run.device)
    if input_ids is None:
        return new
    return torch.cat([input_ids, new.to(input_ids.dtype)], dim=1)
