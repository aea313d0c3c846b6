"""Models for the multi-process runtime tests (importable by spawned ranks)."""

import os
from collections import OrderedDict

from torch import nn


def linear_chain(n: int = 8, width: int = 16) -> nn.Sequential:
    return nn.Sequential(OrderedDict((f"l{i}", nn.Linear(width, width)) for i in range(n)))


class Boom(nn.Module):
    """Raises (or kills its process) when run: a rank that fails."""

    def __init__(self, width: int = 16, die: bool = False) -> None:
        super().__init__()
        self.inner = nn.Linear(width, width)
        self.die = die

    def forward(self, x):
        if self.die:
            os._exit(3)
        raise RuntimeError("boom in layer l2")


def failing_chain(die: bool = False) -> nn.Sequential:
    layers = [(f"l{i}", nn.Linear(16, 16)) for i in range(4)]
    layers[2] = ("l2", Boom(die=die))
    return nn.Sequential(OrderedDict(layers))
