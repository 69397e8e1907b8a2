"""keepwarm: load a model once, keep it warm, serve it from anywhere."""

from keepwarm.cache import ModelCache, load
from keepwarm.errors import (
    DeadlineExceededError,
    DownloadError,
    InvalidConfigError,
    InvalidInputError,
    KeepwarmError,
    ModelLoadError,
    ModelNotFoundError,
    ResourceExhaustedError,
    UnavailableError,
    UnsafeFormatError,
)
from keepwarm.model import LeasedModel, Model
from keepwarm.repository import Repository
from keepwarm.settings import Settings

__version__ = "0.1.0"

__all__ = [
    "DeadlineExceededError",
    "DownloadError",
    "InvalidConfigError",
    "InvalidInputError",
    "KeepwarmError",
    "LeasedModel",
    "Model",
    "ModelCache",
    "ModelLoadError",
    "ModelNotFoundError",
    "Repository",
    "ResourceExhaustedError",
    "Settings",
    "UnavailableError",
    "UnsafeFormatError",
    "load",
]
