"""layerfit's planner: partition a model's layers into contiguous pieces that fit a capacity.

>>> from solver import load_instance, solve
>>> plan = solve(load_instance("instances/seed-30b-h100-hbm.json"))   # doctest: +SKIP

This package never imports torch; CP-SAT and PuLP are imported only when used.
"""

from .errors import InstanceError, LayerfitError, OptionError, PlanError, TopologyError
from .export import EXPORT_TARGETS, export_plan
from .hf_config import from_hf_config
from .instance import Constraints, Device, Instance, Layer, SeedModel, TiedGroup, Training, load_instance
from .mapper import map_plan
from .memory import Footprint
from .metrics import plan_metrics
from .placement import Placement
from .plan import Plan, Status
from .solve import METHODS, solve
from .topology import LinkTable, link_bandwidth
from .topology_files import load_topology
from .units import format_size, parse_size
from .validation import validate_plan

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
