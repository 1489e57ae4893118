"""Exceptions a clinician-engineer can act on.

Every error medprune raises on bad user input derives from :class:`MedpruneError`; the CLI turns
these into one line and a non-zero exit code instead of a traceback.
"""

from __future__ import annotations

__all__ = ["MedpruneError", "ConfigError", "DataError", "RegistryError", "CheckpointError", "PruningError",
           "QuantizationError", "ExportError"]


class MedpruneError(Exception):
    """Base class of every error caused by user input (config, data, checkpoints)."""


class ConfigError(MedpruneError, ValueError):
    """An experiment config is malformed; the message reads ``file: key.path: problem``."""


class DataError(MedpruneError):
    """A manifest, sample or data folder cannot be used; the message names the file and reason."""


class RegistryError(MedpruneError, KeyError):
    """An unknown or duplicate registry name; the message suggests close matches."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class CheckpointError(MedpruneError):
    """A checkpoint is missing, corrupt, or does not fit the model it is loaded into."""


class PruningError(MedpruneError):
    """A pruning request cannot be carried out on the given model."""


class QuantizationError(MedpruneError):
    """A quantization request cannot be carried out (bit width, layers, calibration data)."""


class ExportError(MedpruneError):
    """A model cannot be exported, or its exported file does not reproduce the PyTorch outputs."""
