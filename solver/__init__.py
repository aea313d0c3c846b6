"""layerfit's planner: partition a model's layers into contiguous pieces that fit a capacity.

>>> from layerfit import load_instance, solve
>>> plan = solve(load_instance("instances/seed-30b-h100-hbm.json"))   # doctest: +SKIP

This package never imports torch; CP-SAT and PuLP are imported only when used.
"""

from .errors import InstanceError, LayerfitError, OptionError, PlanError, TopologyError
from .interop.export import EXPORT_TARGETS, export_plan
from .interop.hf_config import from_hf_config
from .interop.serving import Serving
from .model.instance import Constraints, Device, Instance, Layer, SeedModel, TiedGroup, Training, load_instance
from .placement.mapper import map_plan
from .model.memory import Footprint
from .report.metrics import plan_metrics
from .placement.placement import Placement
from .model.plan import Plan, Status
from .solve import METHODS, solve
from .placement.topology import LinkTable, link_bandwidth
from .placement.topology_files import load_topology
from .model.units import format_size, parse_size
from .report.validation import validate_plan

__all__ = [
    "Constraints",
    "Device",
    "EXPORT_TARGETS",
    "Footprint",
    "Instance",
    "InstanceError",
    "Layer",
    "LayerfitError",
    "LinkTable",
    "METHODS",
    "OptionError",
    "Placement",
    "Plan",
    "PlanError",
    "SeedModel",
    "Serving",
    "Status",
    "TopologyError",
    "TiedGroup",
    "Training",
    "export_plan",
    "format_size",
    "from_hf_config",
    "link_bandwidth",
    "load_instance",
    "load_topology",
    "map_plan",
    "parse_size",
    "plan_metrics",
    "solve",
    "validate_plan",
]

__version__ = "0.1.0"
