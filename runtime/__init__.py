"""layerfit's runtime: executes a placement with torch.distributed (not built yet).

This package may import torch; it never imports ortools or pulp.
"""

__all__: list[str] = []
