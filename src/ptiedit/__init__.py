"""ptiedit: text-driven editing of real images with Prompt Tuning Inversion (Dong et al., ICCV 2023)."""
__version__ = "0.1.0"

from .editing.edit import DEFAULT_ETA, DEFAULT_MODE, MODES, edit, reconstruct  # noqa: E402
from .editing.faithful import FaithfulConfig  # noqa: E402
from .editing.p2p import P2PConfig  # noqa: E402
from .images import load_image  # noqa: E402
from .inversion.invert import METHODS, invert  # noqa: E402
from .inversion.result import Inversion  # noqa: E402
from .models.family import NonFiniteError, model_family  # noqa: E402
from .models.loading import load_pipeline  # noqa: E402

__all__ = ["DEFAULT_ETA", "DEFAULT_MODE", "FaithfulConfig", "Inversion", "METHODS", "MODES", "NonFiniteError",
           "P2PConfig", "PTIPipeline", "edit", "invert", "load_image", "load_pipeline", "model_family", "reconstruct",
           "__version__"]


def __getattr__(name: str):
    """PTIPipeline is imported on first use: it imports diffusers, which `import ptiedit` does not need."""
    if name == "PTIPipeline":
        from .pipeline import PTIPipeline

        return PTIPipeline
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
