"""The memory a serving engine (vLLM) holds for a model, as :func:`~layerfit.from_hf_config`'s
``serving=`` option: :class:`Serving` holds vLLM's options that decide it.

With ``serving``, the imported instance says what each pipeline rank of ``vllm serve`` holds
(e bytes an activation element, the activation dtype's; N = ``max_num_batched_tokens``;
R = min(N, ``max_num_seqs``); h the hidden size; T = ``batch_size`` × ``seq_len`` tokens):

* **KV cache** in its own dtype (``kv_cache_dtype``; None: vLLM's ``auto``, the activation
  dtype) for T tokens in every attention layer: 2·kv_dim elements a token a block (DeepSeek's
  MLA: its latent, ``kv_lora_rank`` + ``qk_rope_head_dim``; Falcon: the key/value groups vLLM
  keeps, not the heads transformers broadcasts). vLLM pages hold whole tokens, and a layer
  with a sliding window is counted for all T tokens too (not min(T, W)): the instance's KV
  bytes scale linearly in the tokens, which the objective ``max_kv_tokens`` needs. The
  instance's ``kv_tokens`` is T.
* **Weights** of 8 bits or fewer (fp8, int8, int4): the embedding and the LM head stay in the
  activation dtype (16-bit: bf16 by default), as vLLM loads such checkpoints (an FP8
  checkpoint's quantization config leaves out ``lm_head``; ``VocabParallelEmbedding`` is never
  quantized). A tied embedding and head share one 16-bit weight.
* **Activations of one scheduler step**, not of a whole batch: inference frees a layer's output
  once the next layer has read it (``activation_bytes`` = 0); what crosses a cut to the next
  rank is N·h·e (``output_bytes``; Falcon's parallel attention sub-layer carries 3·h or 2·h);
  each layer's transient peak at N tokens is its ``buffer_bytes``, and the instance reuses one
  workspace (``buffer_reuse``), so a stage holds its largest layer's. A decoder block:
  N·e·(2h + max(q_dim + 2·kv_dim, M)) — its input and the normalised hidden state beside the
  attention's projections or the MLP's intermediates, M = 3·I for a gated MLP (gate, up and
  their product; a mixture of experts' I is a token's, its k experts' and the shared experts'
  widths), 2·I for a plain one (GPT-2, Falcon: the first projection and the activation);
  DeepSeek's MLA decompresses queries, keys and values of every head in a prefill,
  H·(2·(d_nope + d_rope) + d_v) in place of q_dim + 2·kv_dim. With ``split="sublayer"`` the
  attention sub-layer holds N·e·(2h + q_dim + 2·kv_dim), the MLP N·e·(2h + M). The embedding
  and the final norm hold N·h·e; the head the logits peak of vLLM's profile run,
  R·vocab·(4 + e): the model-dtype logits and the sampler's fp32 copy. vLLM's ``profile_run``
  (``_dummy_sampler_run``) computes logits for the last token of each of its dummy requests,
  min(max_num_tokens, max_num_seqs) of them — hence R, not the N rows issue #16 first said
  (the same whenever ``max_num_seqs`` ≥ ``max_num_batched_tokens``).
* ``gpu_memory_utilization``: the share of each device's memory vLLM may use
  (``constraints.gpu_memory_utilization``: each capacity counts as ⌊capacity · u⌋ − reserve).

The defaults are vLLM's, for ``vllm serve`` on a GPU of 70 GiB or more other than an A100
(8,192 tokens a step; that case takes 1,024 sequences) and for its offline ``LLM`` class on
others (8,192 tokens, 256 sequences; ``vllm serve`` there: 2,048 tokens, 256 sequences), as
recent vLLM's ``EngineArgs.get_batch_defaults`` sets them: they vary with vLLM's version, its
entry point and the GPU, so pass the values your engine runs with.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import InstanceError
from ..model.instance import Layer
from ..model.units import dtype_bytes, normalise_dtype, shown
from .export import BLOCK_NAME
from .hf_families.shape import Widths

__all__ = ["Serving", "VLLM_KV_DTYPES", "serving_layers"]

# vLLM's --kv-cache-dtype spellings beside layerfit's dtypes: "auto" is the activation dtype.
VLLM_KV_DTYPES: dict[str, str | None] = {"auto": None, "fp8_e4m3": "fp8", "fp8_e5m2": "fp8"}
_ATTENTION = ("self_attn", "attn", "attention", "self_attention")  # self_attention: Falcon's
_FIELDS = ("kv_cache_dtype", "max_num_batched_tokens", "max_num_seqs", "gpu_memory_utilization")


def _whole(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InstanceError(f"serving.{field}: must be a whole number ≥ 1, got {shown(value)}")
    return value


@dataclass(frozen=True)
class Serving:
    """vLLM's options that decide what a rank holds beside its weights (the module docstring
    has the formulas).

    The defaults (8192, 256, 0.9) are vLLM's, but vLLM's own vary with its version, its entry
    point and the GPU: pass the values your engine runs with.

    Parameters
    ----------
    kv_cache_dtype:
        The KV cache's dtype, as ``--kv-cache-dtype``: None (or ``"auto"``) is the activation
        dtype; else a dtype (``fp8``, ``bf16``, ``fp16``, ``fp32``; vLLM's ``fp8_e4m3`` and
        ``fp8_e5m2`` are ``fp8``).
    max_num_batched_tokens:
        The scheduler's tokens a step (``--max-num-batched-tokens``): the profile run's forward
        runs that many.
    max_num_seqs:
        The sequences a step (``--max-num-seqs``): the profile run's dummy requests, whose last
        tokens get logits.
    gpu_memory_utilization:
        The share of each GPU's memory vLLM may use (``--gpu-memory-utilization``), in (0, 1].

    Examples
    --------
    >>> Serving(kv_cache_dtype="fp8_e4m3", max_num_seqs=64)
    Serving(kv_cache_dtype='fp8', max_num_batched_tokens=8192, max_num_seqs=64, gpu_memory_utilization=0.9)
    >>> Serving(max_num_seqs=0)
    Traceback (most recent call last):
    ...
    layerfit.errors.InstanceError: serving.max_num_seqs: must be a whole number ≥ 1, got 0
    """

    kv_cache_dtype: str | None = None
    max_num_batched_tokens: int = 8192
    max_num_seqs: int = 256
    gpu_memory_utilization: float = 0.9

    def __post_init__(self) -> None:
        kv = self.kv_cache_dtype
        if isinstance(kv, str) and kv in VLLM_KV_DTYPES:
            kv = VLLM_KV_DTYPES[kv]
        elif kv is not None:
            kv = normalise_dtype(kv, "serving.kv_cache_dtype")
        object.__setattr__(self, "kv_cache_dtype", kv)
        _whole(self.max_num_batched_tokens, "max_num_batched_tokens")
        _whole(self.max_num_seqs, "max_num_seqs")
        u = self.gpu_memory_utilization
        if isinstance(u, bool) or not isinstance(u, (int, float)) or not math.isfinite(u) or not 0 < u <= 1:
            raise InstanceError(f"serving.gpu_memory_utilization: must be a fraction in (0, 1], got {shown(u)}")
        object.__setattr__(self, "gpu_memory_utilization", float(u))

    @classmethod
    def from_dict(cls, raw: object) -> Serving:
        """A :class:`Serving` from a mapping of its fields (JSON); an unknown key is an error."""
        if not isinstance(raw, Mapping):
            raise InstanceError(f"serving: expected a Serving or a mapping of its fields, got {shown(raw)}")
        unknown = sorted(str(key) for key in raw if key not in _FIELDS)
        if unknown:
            raise InstanceError(f"serving: unknown option {unknown[0]!r} (allowed: {', '.join(_FIELDS)})")
        return cls(**raw)

    def to_dict(self) -> dict[str, Any]:
        """The fields, as :meth:`from_dict` reads them."""
        return dataclasses.asdict(self)

    @property
    def logit_rows(self) -> int:
        """R: the rows of logits vLLM's profile run computes, min(max_num_batched_tokens, max_num_seqs)."""
        return min(self.max_num_batched_tokens, self.max_num_seqs)


def as_serving(value: object) -> Serving:
    """``from_hf_config``'s ``serving`` argument: a :class:`Serving`, or a mapping of its fields."""
    return value if isinstance(value, Serving) else Serving.from_dict(value)


def serving_layers(layers: Sequence[Layer], widths: Widths, serving: Serving, *, tokens: int,
                   activation_dtype: str, kv_dtype: str, sixteen_bit_ends: bool) -> list[Layer]:
    """``layers`` (a decoder's, as its family builds them: the embedding first, the blocks
    named ``….layers.i`` or ``….h.i`` with their sub-layers, the final norm, the head last)
    with what a vLLM rank holds for each (the module docstring): ``tokens`` of KV cache in
    ``kv_dtype``, one scheduler step's transient as ``buffer_bytes``, no held activation, and
    with ``sixteen_bit_ends`` the embedding and the head in ``activation_dtype``."""
    n = serving.max_num_batched_tokens

    def act(elements: int) -> int:  # elements in the activation dtype, whole bytes
        return dtype_bytes(activation_dtype, elements, "activation_dtype")

    h, vocab, blocks = widths.hidden, widths.vocab, widths.blocks
    out: list[Layer] = []
    seen: set[int] = set()
    last = len(layers) - 1
    for index, layer in enumerate(layers):
        kv = 0
        output = act(n * h)
        dtype = layer.dtype
        if index == 0:  # the embedding
            buffer = act(n * h)
            dtype = activation_dtype if sixteen_bit_ends else dtype
        elif index == last:  # the head: the model-dtype logits and the sampler's fp32 copy
            rows = serving.logit_rows
            buffer = 4 * rows * vocab + act(rows * vocab)
            output = act(rows * vocab)
            dtype = activation_dtype if sixteen_bit_ends else dtype
        elif (match := BLOCK_NAME.match(layer.name)) is not None:
            block = int(match["index"])
            seen.add(block)
            w = blocks[block]
            sub = match["sub"]
            attention = sub is None or sub in _ATTENTION
            if attention:
                kv = tokens * dtype_bytes(kv_dtype, w.cached, "serving.kv_cache_dtype")
            if sub is None:
                widest = max(w.qkv, w.mlp)
            elif attention:
                widest = w.qkv
                output = act(n * (w.crossing or h))
            else:
                widest = w.mlp
            buffer = act(n * (2 * h + widest))
        else:  # the final norm
            buffer = act(n * h)
        out.append(dataclasses.replace(layer, activation_bytes=0, output_bytes=output, buffer_bytes=buffer,
                                       kv_cache_bytes=kv, dtype=dtype))
    if seen != set(range(len(blocks))):  # a family whose layer names this reading does not know
        raise InstanceError(f"serving: the layers name blocks {sorted(seen)}, the config {len(blocks)}")
    return out
