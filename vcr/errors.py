"""Errors that name the problem (config key, dataset path, layer, alpha/beta) before work is wasted."""


class VCRError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(VCRError, ValueError):
    """A configuration value is missing or invalid; the message names the key."""


class DatasetError(VCRError, FileNotFoundError):
    """A dataset is missing or corrupt; the message says what, where it was looked for, and how
    to obtain it."""


class NonFiniteError(VCRError, FloatingPointError):
    """A loss, activation or gradient became NaN/inf; the message names where (run, step, layer,
    alpha, beta)."""
