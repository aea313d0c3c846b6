"""A transformer-like synthetic model, and the instance that describes it exactly.

``synthetic_model()`` is a chain: an input projection ("embed", wide), ``blocks`` MLP
blocks (LayerNorm, Linear h→f, GELU, Linear f→h), and an output projection ("head",
wide) — uneven like a real LM, whose embedding and head outweigh a block. It is a
factory for ``layerfit.runtime.execute`` and ``layerfit run --model layerfit.runtime.synthetic:synthetic_model``.
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import torch
from torch import nn

from layerfit import Instance, Layer

from .model import layers_of, param_count

__all__ = ["synthetic_model", "example_inputs", "synthetic_instance", "WIDTH", "HIDDEN"]

WIDTH, HIDDEN, FFN, BLOCKS = 512, 64, 256, 6


class Block(nn.Sequential):
    def __init__(self, hidden: int, ffn: int) -> None:
        super().__init__(nn.LayerNorm(hidden), nn.Linear(hidden, ffn), nn.GELU(), nn.Linear(ffn, hidden))


def synthetic_model(blocks: int = BLOCKS, hidden: int = HIDDEN, ffn: int = FFN, width: int = WIDTH,
                    head_width: int | None = None) -> nn.Sequential:
    """``head_width`` (default ``width``): the head's outputs, wider than the input like an LM's
    vocabulary, so that the head outweighs the input projection."""
    layers: list[tuple[str, nn.Module]] = [("embed", nn.Linear(width, hidden))]
    layers += [(f"block{i}", Block(hidden, ffn)) for i in range(blocks)]
    layers.append(("head", nn.Linear(hidden, head_width or width)))
    return nn.Sequential(OrderedDict(layers))


def example_inputs(batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, target) for ``synthetic_model``: the convention ``layerfit run`` looks for."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, WIDTH, generator=generator), torch.randn(batch, WIDTH, generator=generator)


def synthetic_instance(model: nn.Module, micro_batch: int, *, capacity: int | str = "1GB") -> Instance:
    """The instance of ``model`` in fp32: exact params, and each layer's output per micro-batch.

    Activation bytes come from a forward pass on the meta device (nothing is allocated).
    """
    outputs: dict[str, int] = {}
    with torch.device("meta"):
        x = torch.empty(micro_batch, model[0].in_features)
        for name, layer in layers_of(model):
            meta_layer = copy.deepcopy(layer).to("meta")  # leave the caller's model as it is
            x = meta_layer(x)
            outputs[name] = x.numel() * x.element_size()
    return Instance(
        name="synthetic",
        capacity=capacity,
        dtype="fp32",
        layers=[Layer(name, params=param_count(layer), activation_bytes=outputs[name]) for name, layer in layers_of(model)],
    )
