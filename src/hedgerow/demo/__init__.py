"""``hedgerow demo``: the seed's scenario end to end on one machine (cloud, core, thing)."""

from hedgerow.demo.processes import DemoError
from hedgerow.demo.scenario import Demo, DemoOptions

__all__ = ["Demo", "DemoError", "DemoOptions"]
