"""Errors that are the user's to fix (the CLI prints them as one line, without a traceback).

Kept free of heavy imports so that the command line can name them before it loads torch.
"""

from __future__ import annotations


class NoImagesError(ValueError):
    """No usable image was found where the user pointed."""


class ModelFileError(ValueError):
    """A model file is missing, corrupt, or not a fastprotect model."""


class WeightsNotFoundError(FileNotFoundError):
    """A pinned weight file could not be found locally nor downloaded."""


class ChecksumError(ValueError):
    """A weight file's bytes do not match its pinned sha256."""


class ConfigError(ValueError):
    """A training or evaluation setting (config file or command line) that cannot work."""


USER_ERRORS = (NoImagesError, ModelFileError, WeightsNotFoundError, ChecksumError, ConfigError)
