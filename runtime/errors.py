"""The runtime's errors about models (the solver's hierarchy: a LayerfitError, and a ValueError)."""

from __future__ import annotations

from layerfit import LayerfitError

__all__ = ["ModelError"]


class ModelError(LayerfitError, ValueError):
    """A model that does not match its plan, or a model spec, checkpoint or option that cannot be used."""
