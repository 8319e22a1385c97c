"""Experimental APIs, mirroring `optax.experimental`: they may change as optax's do."""

from gradxform.experimental import _aggregating as aggregating

__all__ = ["aggregating"]
