"""Tiny models of both families (random weights, made peaked so that argmax does not hang on rounding), a scripted
model that emits known tokens through the same contract, and tokenizers trained here on a few sentences."""

import pytest
import torch

import xlstm_engine as xe

VOCAB = 101
SENTENCES = [
    "the cat sat on the mat.", "the dog sat on the log.", "a cat and a dog met on a mat.",
    "where the cat goes the dog goes.", "café au lait, s'il vous plaît.", "the end of the story.",
]


@torch.no_grad()
def sharpen(model: torch.nn.Module, seed: int = 0, scale: float = 0.5) -> torch.nn.Module:
    """Add noise to every parameter: the small init gives near-uniform logits, whose argmax a last-bit difference
    between a batched and an unbatched matmul could flip."""
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.add_(scale * torch.randn(p.shape, generator=g))
    return model.eval()


def large_model(vocab_size: int = VOCAB, **config) -> xe.xLSTMLarge:
    torch.manual_seed(0)
    config = dict(embedding_dim=32, num_heads=2, num_blocks=2, vocab_size=vocab_size, eos_token_id=None) | config
    return sharpen(xe.xLSTMLarge(xe.xLSTMLargeConfig(**config)))


def neurips_model(vocab_size: int = VOCAB) -> xe.xLSTMLMModel:
    torch.manual_seed(0)
    config = xe.xLSTMLMModelConfig(
        vocab_size=vocab_size, num_blocks=2, embedding_dim=32, slstm_at=[1],
        mlstm_block=xe.mLSTMBlockConfig(mlstm=xe.mLSTMLayerConfig(conv1d_kernel_size=4, qkv_proj_blocksize=4,
                                                                  num_heads=2)),
        slstm_block=xe.sLSTMBlockConfig(slstm=xe.sLSTMLayerConfig(num_heads=2, conv1d_kernel_size=4),
                                        feedforward=xe.FeedForwardConfig(proj_factor=1.3, act_fn="gelu")))
    return sharpen(xe.xLSTMLMModel(config))


@pytest.fixture
def make_large():
    return large_model


@pytest.fixture
def make_neurips():
    return neurips_model


@pytest.fixture(params=["large", "neurips"])
def model(request):
    """Each family in turn. The Large one has no eos in its config here (eos_token_id=None), so runs go to
    max_new_tokens unless a test asks for an eos; it keeps bos 0 and pad 1."""
    return large_model() if request.param == "large" else neurips_model()


class ScriptConfig:
    def __init__(self, vocab_size: int, **token_ids):
        self.vocab_size = vocab_size
        self.__dict__.update(token_ids)

    def to_dict(self):
        return dict(self.__dict__)


class ScriptedModel:
    """The generation contract with known output: after a row has seen k tokens, its logits put all mass on
    scripts[row][k - prompt_len] (the last script token once past the end). The state is a tuple holding the count
    [B] of tokens seen; pads (attention_mask 0) are not counted, as a pad leaves a real model's state unchanged."""

    def __init__(self, scripts: list[list[int]], prompt_len: int, vocab_size: int = 300, **token_ids):
        self.scripts, self.prompt_len = scripts, prompt_len
        self.config = ScriptConfig(vocab_size, **token_ids)
        self.fed: list[torch.Tensor] = []  # the ids of every call

    def allocate_state(self, batch_size, device=None, dtype=None):
        return (torch.zeros(batch_size, device=device),)

    def check_state(self, state, batch_size, device=None):
        if not isinstance(state, tuple) or len(state) != 1 or state[0].shape != (batch_size,):
            raise ValueError(f"state must be a tuple of one count [{batch_size}], got {state!r}")

    def forward_with_state(self, ids, state=None, *, attention_mask=None, resets=None, logits_to_keep=0,
                           inplace=False):
        self.fed.append(ids.clone())
        state = state or self.allocate_state(ids.shape[0])
        counted = ids.shape[1] if attention_mask is None else attention_mask.sum(dim=1)
        count = state[0] + counted
        logits = torch.full((ids.shape[0], 1, self.config.vocab_size), -10.0)
        for row, k in enumerate(count.long().tolist()):
            script = self.scripts[row]
            logits[row, 0, script[min(k - self.prompt_len, len(script) - 1)]] = 10.0
        if inplace:
            state[0].copy_(count)
            return logits, state
        return logits, (count,)


@pytest.fixture
def scripted():
    return ScriptedModel


@pytest.fixture
def bpe_tokenizer():
    """A byte-level BPE (every byte a token, a few merges): "é" and emoji split across tokens."""
    tokenizers = pytest.importorskip("tokenizers")
    tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE())
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=290, special_tokens=["<|endoftext|>", "<|pad|>"],
                                             initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
                                             show_progress=False)
    tokenizer.train_from_iterator(SENTENCES, trainer)
    return tokenizer


@pytest.fixture
def word_tokenizer():
    """A word-level tokenizer: decode joins words with spaces, so text is not the concatenation of tokens."""
    tokenizers = pytest.importorskip("tokenizers")
    words = sorted({w for s in SENTENCES for w in s.replace(".", " .").replace(",", " ,").split()})
    vocab = {w: i for i, w in enumerate(["[UNK]", *words])}
    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    return tokenizer
