"""Models for the multi-process runtime tests (importable by spawned ranks)."""

import os
import time
from collections import OrderedDict

import torch
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


class Hang(nn.Module):
    """Notes its process id in $LAYERFIT_TEST_PIDS when run; with ``sleep``, then hangs."""

    def __init__(self, width: int = 16, sleep: bool = False) -> None:
        super().__init__()
        self.inner = nn.Linear(width, width)
        self.sleep = sleep

    def forward(self, x):
        folder = os.environ.get("LAYERFIT_TEST_PIDS")
        if folder:
            open(os.path.join(folder, str(os.getpid())), "w").close()
        if self.sleep:
            time.sleep(600)
        return self.inner(x)


def hanging_chain() -> nn.Sequential:
    """Four layers on two ranks: rank 0 runs, rank 1 hangs in l2 — a run to interrupt."""
    return nn.Sequential(OrderedDict((f"l{i}", Hang(sleep=i == 2)) for i in range(4)))


def example_inputs(batch: int):
    """The batch ``layerfit run --model runtime_models:...`` takes."""
    return torch.randn(batch, 16), torch.randn(batch, 16)


class Join(nn.Module):
    """A decoder layer of a U-Net: its input and a skip, concatenated, projected back."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.proj = nn.Linear(2 * width, width)

    def forward(self, x, skip):
        return self.proj(torch.cat([x, skip], dim=-1))


UNET_EDGES = (("enc0", "enc1"), ("enc1", "mid"), ("mid", "dec1"), ("dec1", "dec0"), ("dec0", "head"),
              ("enc1", "dec1"), ("enc0", "dec0"))  # the chain, then the two skips


def unet_like(width: int = 16) -> nn.Sequential:
    """Six layers wired by UNET_EDGES: dec1 takes (mid, enc1), dec0 takes (dec1, enc0)."""
    layers = [("enc0", nn.Linear(width, width)), ("enc1", nn.Linear(width, width)), ("mid", nn.Linear(width, width)),
              ("dec1", Join(width)), ("dec0", Join(width)), ("head", nn.Linear(width, width))]
    return nn.Sequential(OrderedDict(layers))


class Gain(nn.Module):
    """A learned gain per feature: a parameter with no reset_parameters()."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(width))

    def forward(self, x):
        return x * self.gain


class Wave(nn.Module):
    """A projection plus a fixed sinusoid, computed in the constructor: a non-persistent buffer
    (as rotary embeddings keep ``inv_freq``), which no checkpoint holds."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.proj = nn.Linear(width, width)
        self.register_buffer("freq", 1.0 / 10000 ** (torch.arange(width) / width), persistent=False)

    def forward(self, x):
        return self.proj(x) + torch.sin(3.0 * self.freq)


def custom_model(width: int = 16) -> nn.Sequential:
    """Nested: its children are embed, blocks, norm, head; an instance may name the blocks'
    own modules instead (blocks.b0, blocks.b1)."""
    blocks = nn.Sequential(OrderedDict(b0=nn.Sequential(Gain(width), Wave(width)),
                                       b1=nn.Sequential(nn.Linear(width, width), nn.GELU())))
    return nn.Sequential(OrderedDict(embed=nn.Linear(width, width), blocks=blocks, norm=nn.LayerNorm(width),
                                     head=nn.Linear(width, width)))


def trained_model(path: str) -> nn.Sequential:
    """custom_model with the trained weights saved at ``path``: a factory that loads them."""
    model = custom_model()
    model.load_state_dict(torch.load(path, weights_only=True))
    return model


class Partial(nn.Module):
    """Its reset_parameters() sets one of its two parameters."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(width))
        self.bias = nn.Parameter(torch.empty(width))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def forward(self, x):
        return x * self.weight + self.bias
