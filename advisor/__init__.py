"""moe-advisor: how to run a Mixture-of-Experts (diffusion) LLM on a GPU too small for all its experts."""

__version__ = "0.1.0"
