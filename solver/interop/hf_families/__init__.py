"""The model families :func:`~layerfit.from_hf_config` reads, one module each, keyed by the
config's ``model_type``. A family's function takes the :class:`~.shape.Shape` (batch,
sequence, element size, mode), the split and the raw config, and returns its layers in
execution order, named after transformers' modules, with exact parameters."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .bert import bert
from .deepseek import deepseek
from .falcon import falcon
from .gemma import MULTIMODAL, gemma
from .gpt2 import gpt2
from .gpt_oss import gpt_oss
from .llama import llama
from .olmo2 import olmo2
from .phi3 import phi3
from .qwen3 import qwen3
from .shape import Built, Shape

__all__ = ["FAMILIES", "BUILDERS", "REFUSED"]

BUILDERS: dict[str, Callable[[Shape, str, Mapping[str, Any]], Built]] = {
    "llama": llama,
    "mistral": llama,
    "mixtral": llama,
    "qwen2": llama,
    "qwen3": qwen3,
    "qwen3_moe": qwen3,
    "gemma2": gemma,
    "gemma3_text": gemma,
    "phi3": phi3,
    "olmo2": olmo2,
    "gpt2": gpt2,
    "bert": bert,
    "deepseek_v2": deepseek,
    "deepseek_v3": deepseek,
    "gpt_oss": gpt_oss,
    "falcon": falcon,
}
FAMILIES = tuple(BUILDERS)
REFUSED: dict[str, str] = {"gemma3": MULTIMODAL}  # model types refused with a way out, not just unknown
