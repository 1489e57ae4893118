"""Exceptions a clinician-engineer can act on.

Every error medprune raises on bad user input derives from :class:`MedpruneError`; the CLI turns
these into one line and a non-zero exit code instead of a traceback. The exit codes of the
``medprune`` command:

====  ==========================================================================================
0     done
1     an internal error: a bug in medprune (one line; the traceback is saved to a file to report)
2     bad input: config, data, checkpoint, command-line usage (one line naming the file and key)
3     a compressed model failed its safety gate; it is kept as ``*.gate_failed.*``, not as the
      deliverable (``--accept-unsafe`` overrides, and the override is recorded)
130   interrupted (Ctrl-C); the message says how to continue
====  ==========================================================================================

A failed ``--nproc N`` run exits with its first failing rank's code, one line per failing rank.
"""

from __future__ import annotations

__all__ = ["MedpruneError", "ConfigError", "DataError", "RegistryError", "CheckpointError", "PruningError",
           "QuantizationError", "ExportError", "SafetyGateError", "DistributedRunError", "EXIT_OK", "EXIT_BUG",
           "EXIT_INPUT", "EXIT_GATE", "EXIT_INTERRUPTED"]

EXIT_OK, EXIT_BUG, EXIT_INPUT, EXIT_GATE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class MedpruneError(Exception):
    """Base class of every error caused by user input (config, data, checkpoints)."""

    #: The ``medprune`` command's exit code for this error.
    exit_code: int = EXIT_INPUT


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


class SafetyGateError(MedpruneError):
    """A compressed model lost more validation worst-class performance than its safety gate allows.

    The work is kept (the model under a ``*.gate_failed.*`` name, its metrics and the report), but
    not as the deliverable; ``--accept-unsafe`` overrides and the override is recorded.
    """

    exit_code = EXIT_GATE


class DistributedRunError(MedpruneError):
    """A ``--nproc N`` run failed; the message holds one line per failing rank."""

    def __init__(self, message: str, exit_code: int = EXIT_BUG) -> None:
        super().__init__(message)
        self.exit_code = exit_code
