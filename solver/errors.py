"""The exceptions layerfit raises.

Input and programming errors raise; solver outcomes (infeasible, out of time) are a
:class:`~layerfit.model.plan.Status` on the returned plan, never an exception.
"""

from __future__ import annotations

__all__ = ["LayerfitError", "InstanceError", "OptionError", "PlanError", "TopologyError"]


class LayerfitError(Exception):
    """Base class of every error layerfit raises on purpose."""


class InstanceError(LayerfitError, ValueError):
    """A malformed instance: the message names the field and the offending value."""


class OptionError(LayerfitError, ValueError):
    """An invalid argument to :func:`layerfit.solve` (unknown method, bad time limit, ...)."""


class PlanError(LayerfitError, ValueError):
    """A plan that breaks a rule of its instance (raised by :func:`layerfit.validate_plan`)."""


class TopologyError(LayerfitError, ValueError):
    """A malformed topology (file, preset name or bandwidth matrix): the message names it."""
