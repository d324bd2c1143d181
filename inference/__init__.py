"""Runtime-agnostic diffusion inference core shared by the Modal, Cog and Space adapters.

Nothing in this package imports ``modal`` or ``cog``: the adapters import it, never the reverse.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("diffusion-serve")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+local"
