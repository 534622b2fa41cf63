"""The package's version, in a module of its own so that any layer can read it.

``skyretriever.__version__`` re-exports it; modules inside the package import it
from here, never from the package face (which imports every layer).
"""

__version__ = "0.1.0"
