"""Generation over the stateful model contract: prefill once, then decode from a state updated in place.

    out = generate(model, input_ids, attention_mask, max_new_tokens=50, do_sample=True, top_p=0.9, seed=0)
    for event in stream(model, "Once upon", tokenizer=tok, max_new_tokens=50): print(event.text, end="")
    ps = prefill(model, prefix_ids); out = generate(model, None, state=ps.repeat(4), ...)

The design in a page: README.md beside this file.
"""

from .generate import Decoding, generate
from .protocol import GenerationModel, fingerprint
from .sampling import SamplingParams
from .state import PromptState, PromptStateError, prefill
from .streaming import StreamEvent, TextDelta, stream

__all__ = [
    "Decoding", "GenerationModel", "PromptState", "PromptStateError", "SamplingParams", "StreamEvent", "TextDelta",
    "fingerprint", "generate", "prefill", "stream",
]
