"""PromptState: a prompt's model state and last logits, to clone, fork, index, concatenate, save and reload.

    ps = prefill(model, prefix_ids)                  # the state after the prefix, logits [B, V]
    forks = ps.repeat(4)                             # rows [a, a, a, a, b, ...], like repeat_interleave
    out = generate(model, None, state=forks, max_new_tokens=20, do_sample=True, generator=[g0, g1, g2, g3, ...])
    ps.save("prefix.safetensors"); ps = PromptState.load("prefix.safetensors", model)

A state is the model's own (nested named tuples of tensors, batch first; model/state.py); this module handles it
generically, so both model families work alike.
"""

import os
import tempfile
from pathlib import Path

import torch

from .inputs import prepare_prompt, resolve_bos
from .protocol import check_model, fingerprint

FORMAT, VERSION = "xlstm_engine.PromptState", "1"


class PromptStateError(ValueError):
    """A PromptState file that is missing, unreadable, or not for this model."""


def map_state(fn, *states):
    """Apply `fn` to the tensors at the same place in `states` (same nesting; None stays None)."""
    first = states[0]
    if isinstance(first, torch.Tensor):
        return fn(*states)
    if first is None:
        return None
    parts = [map_state(fn, *group) for group in zip(*states, strict=True)]
    return type(first)(*parts) if hasattr(first, "_fields") else tuple(parts)


def flatten_state(state, prefix: str = "state") -> dict[str, torch.Tensor]:
    """{"state.0.C": tensor, "state.1.cell.h": ...}: a named tuple's entries by field name, a tuple's by index."""
    if isinstance(state, torch.Tensor):
        return {prefix: state}
    if state is None:
        return {}
    names = state._fields if hasattr(state, "_fields") else range(len(state))
    flat = {}
    for name, part in zip(names, state, strict=True):
        flat.update(flatten_state(part, f"{prefix}.{name}"))
    return flat


class PromptState:
    """The model state after a prompt, with the logits of its last token.

    Attributes:
        state: the model's state (one entry per block), batch size B.
        logits: [B, V] float32, the next-token logits after the prompt.
        fingerprint: sha256 of the model class and architecture config (protocol.fingerprint); a state only
            continues in a model with the same fingerprint.
    """

    def __init__(self, state, logits: torch.Tensor, fingerprint: str):
        self.state, self.logits, self.fingerprint = state, logits, fingerprint

    @property
    def batch_size(self) -> int:
        return self.logits.shape[0]

    def __len__(self) -> int:
        return self.batch_size

    def __repr__(self) -> str:
        return (f"PromptState(batch_size={self.batch_size}, vocab_size={self.logits.shape[1]}, "
                f"fingerprint={self.fingerprint[:12]}..., device={self.logits.device})")

    def _map(self, fn) -> "PromptState":
        return PromptState(map_state(fn, self.state), fn(self.logits), self.fingerprint)

    def clone(self) -> "PromptState":
        """An independent copy (no tensor shared)."""
        return self._map(torch.clone)

    def repeat(self, n: int) -> "PromptState":
        """Each row n times, consecutively: rows [a, b] -> [a, a, b, b] for n = 2 (repeat_interleave)."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"repeat takes an int n >= 1, got {n!r}")
        return self._map(lambda t: t.repeat_interleave(n, dim=0))

    def __getitem__(self, index) -> "PromptState":
        """The rows selected by an int (kept as a batch of 1), a slice, or an index or bool tensor/list: a copy."""
        if isinstance(index, torch.Tensor):
            index = index.cpu()
        rows = torch.arange(self.batch_size)[index].reshape(-1)
        if rows.numel() == 0:
            raise IndexError(f"index {index!r} selects no row of a PromptState of batch size {self.batch_size}")
        rows = rows.to(self.logits.device)
        return self._map(lambda t: t.index_select(0, rows))

    @property
    def rows(self) -> "PromptState":
        """Row indexing, spelled out: `ps.rows[1:3]` is `ps[1:3]`."""
        return self

    @staticmethod
    def cat(states: list["PromptState"]) -> "PromptState":
        """The rows of `states` one after another; they must come from models with one fingerprint."""
        states = list(states)
        if not states or not all(isinstance(s, PromptState) for s in states):
            raise TypeError("PromptState.cat takes a non-empty list of PromptState")
        prints = {s.fingerprint for s in states}
        if len(prints) > 1:
            raise ValueError(f"PromptState.cat: the states come from different models (fingerprints "
                             f"{sorted(p[:12] for p in prints)})")
        return PromptState(map_state(lambda *ts: torch.cat(ts), *(s.state for s in states)),
                           torch.cat([s.logits for s in states]), states[0].fingerprint)

    def save(self, path: str | os.PathLike) -> None:
        """Write one safetensors file (flat keys "logits", "state.0.C", ...; metadata: format, version,
        fingerprint), complete or not at all (written aside, then renamed)."""
        from safetensors.torch import save_file  # a dependency of the package, imported where used

        path = Path(path)
        tensors = {"logits": self.logits, **flatten_state(self.state)}
        tensors = {k: v.detach().contiguous() for k, v in tensors.items()}
        metadata = {"format": FORMAT, "version": VERSION, "fingerprint": self.fingerprint}
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata=metadata)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike, model, device: torch.device | str | None = None) -> "PromptState":
        """Read a file written by `save` for `model` (same fingerprint), onto `device` (default: the model's)."""
        from safetensors import safe_open

        check_model(model)
        path = Path(path)
        if not path.is_file():
            raise PromptStateError(f"{path}: no such PromptState file")
        try:
            with safe_open(path, "pt") as f:
                metadata = f.metadata() or {}
                flat = {key: f.get_tensor(key) for key in f.keys()}
        except Exception as e:
            raise PromptStateError(f"{path}: not a readable PromptState file ({e})") from e
        if metadata.get("format") != FORMAT or "logits" not in flat:
            raise PromptStateError(f"{path}: not a PromptState file (metadata {metadata})")
        if metadata.get("version") != VERSION:
            raise PromptStateError(f"{path}: PromptState format version {metadata.get('version')!r}; this "
                                   f"version reads {VERSION!r}")
        expected = fingerprint(model)
        if metadata.get("fingerprint") != expected:
            raise PromptStateError(f"{path}: the state was saved from another model (fingerprint "
                                   f"{metadata.get('fingerprint')}); this {type(model).__name__} has fingerprint "
                                   f"{expected}")
        if device is None:
            device = next(iter(model.parameters())).device if hasattr(model, "parameters") else "cpu"
        logits = flat.pop("logits").to(device)
        template = model.allocate_state(logits.shape[0], device="meta")  # the nesting, without memory
        keys = list(flatten_state(template))
        if set(flat) != set(keys):
            raise PromptStateError(f"{path}: the keys {sorted(set(flat) ^ set(keys))[:6]} do not match the "
                                   f"model's state")
        keys = iter(keys)  # flatten_state and map_state walk a state in the same order
        state = map_state(lambda _: flat[next(keys)].to(device), template)
        try:
            model.check_state(state, logits.shape[0], torch.device(device))
        except (TypeError, ValueError) as e:
            raise PromptStateError(f"{path}: {e}") from e
        return cls(state, logits, expected)


def own_state(model, state, batch_size: int, device: torch.device):
    """A copy of a given state (PromptState or the model's own) for generate to update in place, checked against
    the model: the caller's state is never changed. Returns (model state, logits [B, V] or None)."""
    if isinstance(state, PromptState):
        if state.fingerprint != fingerprint(model):
            raise ValueError(f"state is a PromptState of another model (fingerprint {state.fingerprint}); this "
                             f"{type(model).__name__} has fingerprint {fingerprint(model)}")
        if state.batch_size != batch_size:
            raise ValueError(f"state is a PromptState of batch size {state.batch_size}, but the batch has "
                             f"{batch_size} rows; select or fork rows with state[index] or state.repeat(n)")
        logits, state = state.logits.float().clone(), state.state
    else:
        logits = None
    model.check_state(state, batch_size, device)
    return map_state(torch.clone, state), logits


def run_prefill(model, prompt, state):
    """Feed a prepared prompt (inputs.Prompt) to the model from `state` (ours to update in place; None: a fresh
    one). Returns (state, logits of each row's last token [B, V] float32)."""
    if state is None:
        state = model.allocate_state(prompt.ids.shape[0], device=prompt.ids.device)
    kwargs = {} if prompt.mask is None else {"attention_mask": prompt.mask}  # no mask: the plain path
    logits, state = model.forward_with_state(prompt.ids, state, logits_to_keep=1, inplace=True, **kwargs)
    return state, logits[:, -1].float()


@torch.no_grad()
def prefill(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
            add_bos_token: bool | None = None, bos_token_id: int | None = None,
            state: "PromptState | None" = None) -> PromptState:
    """The state after a prompt, to generate from, fork, or save.

    Args:
        input_ids: [B, S] token ids; attention_mask [B, S] (1 = token, 0 = pad; left or right padding).
        add_bos_token: the BOS rule of generate (None: on for a model whose config has bos_token_id).
        state: a PromptState to extend (no BOS then); it is not changed.

    Returns:
        PromptState with the model state and the logits [B, V] (float32) of each row's last token.
    """
    check_model(model)
    vocab = model.config.vocab_size
    bos = resolve_bos(model, add_bos_token, bos_token_id, fresh=state is None)
    prompt = prepare_prompt(input_ids, attention_mask, vocab, bos)
    own = None if state is None else own_state(model, state, input_ids.shape[0], input_ids.device)[0]
    own, logits = run_prefill(model, prompt, own)
    return PromptState(own, logits, fingerprint(model))
