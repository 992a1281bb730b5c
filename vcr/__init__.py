"""Variance-Covariance Regularization (Zhu, Shwartz-Ziv, Chen, LeCun 2023), reproduced.

The public API is re-exported lazily so that ``import vcr`` stays cheap (no timm, no
torchvision) for the thin CLIs and the Snakefile.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "vcr_loss": "vcr.regularizer",
    "vcr_terms": "vcr.regularizer",
    "VCRLayer": "vcr.regularizer",
    "vcr_penalty": "vcr.regularizer",
    "attach_vcr": "vcr.attach",
    "detach_vcr": "vcr.attach",
    "vcr_layers": "vcr.attach",
    "vcr_stats": "vcr.attach",
    "create_model": "vcr.models",
    "list_models": "vcr.models",
    "feature_dim": "vcr.models",
    "load_backbone": "vcr.models",
    "save_backbone": "vcr.models",
}


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'vcr' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
