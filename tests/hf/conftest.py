"""The transformers-class tests: skipped without transformers (the `hf` extra). Helpers are in hf_helpers.py."""

import pytest

transformers = pytest.importorskip("transformers")

from hf_helpers import make_model, twin  # noqa: E402


@pytest.fixture(scope="module")
def model():
    """Our xLSTMForCausalLM, tiny, random weights far from the init (eval mode)."""
    return make_model()


@pytest.fixture(scope="module")
def theirs(model):
    """transformers' own xLSTMForCausalLM with the weights of `model`."""
    return twin(model)
