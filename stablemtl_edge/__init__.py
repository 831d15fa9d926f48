"""stablemtl-edge: StableMTL multi-task dense prediction, from checkpoint to camera.

Importing the package is cheap and torch-free; heavy parts live in sub-packages that import their
dependencies themselves (``model``, ``training``, ``export`` need the ``export``/``train`` extras).
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import MissingDependencyError, StableMTLError

__all__ = ["__version__", "StableMTLError", "MissingDependencyError"]
