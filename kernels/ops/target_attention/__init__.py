"""``target_attention``: candidates against a cached behavior history (the serving path)."""
from .op import target_attention, target_bias

__all__ = ["target_attention", "target_bias"]
