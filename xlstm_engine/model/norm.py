"""The base class of every normalization layer, in both model families."""

from torch import nn


class Norm(nn.Module):
    """A normalization layer. Its parameters (scale, shift) are not weight-decayed: `train.models.param_groups`
    finds them by this type, not by a name."""
