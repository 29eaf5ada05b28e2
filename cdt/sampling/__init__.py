"""Generation by iterative unmasking: policies, the loop, templates."""

from cdt.sampling.loop import Generation, SampleConfig, generate
from cdt.sampling.policies import POLICIES, get_policy

__all__ = ["Generation", "SampleConfig", "generate", "POLICIES", "get_policy"]
