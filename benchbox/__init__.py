"""benchbox: honest, reproducible comparisons of CNN backbones on small medical imaging data sets.

The core (this package) imports neither TensorFlow nor PyTorch; framework code lives in the
plugins under ``plugins/``, which are discovered through the ``benchbox`` entry-point group.
"""

from benchbox.errors import BenchboxError
from benchbox.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["BenchboxError", "hookimpl", "__version__"]
