"""layerfit's runtime: run a placement with torch.distributed, one rank per partition.

>>> from layerfit import runtime                                      # doctest: +SKIP
>>> result = runtime.execute(placement, model, inputs, micro_batches=4, schedule="1f1b")
>>> result = runtime.execute(plan, "path/to/hf-model", token_ids)   # a save_pretrained directory
>>> result.outputs, result.report

This package imports torch; it never imports ortools or pulp.
"""

from .execute import ExecutionError, ExecutionResult, execute, load_placement
from .errors import ModelError
from .hf_import import from_hf_model
from .model import build_model, prepare_model
from .profile import profile_module
from .rank import threads_per_rank

__all__ = ["ExecutionError", "ExecutionResult", "ModelError", "build_model", "execute", "from_hf_model", "load_placement",
           "prepare_model", "profile_module", "threads_per_rank"]
