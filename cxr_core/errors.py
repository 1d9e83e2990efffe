"""Exception types.

Every bad input ends in one of these, with a message a clinician or analyst can act on
(which file, which row, what is wrong, what to do). Callers such as the dashboard catch
``CXRError`` and show the message instead of a traceback.
"""

from __future__ import annotations


class CXRError(Exception):
    """Base class for every error this library raises on purpose."""


class ImageLoadError(CXRError):
    """An image file could not be read as a radiograph (corrupt, unsupported, too large)."""


class DatasetError(CXRError):
    """A dataset folder or label file is malformed (missing files, bad labels, duplicates)."""


class LeakageError(DatasetError):
    """The same patient appears in more than one split."""


class UnknownClassError(CXRError, KeyError):
    """A class/finding name is not part of the label space in use."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class ConfigError(CXRError):
    """A training/evaluation configuration is invalid."""


class WeightsUnavailableError(CXRError):
    """Pretrained weights are requested but cannot be found offline."""


class CheckpointError(CXRError):
    """A checkpoint is corrupt, unsafe, or does not match what the caller expects."""


class MetricInputError(CXRError, ValueError):
    """Labels, scores or thresholds handed to a metric are malformed."""


class NotPairedError(CXRError):
    """Two evaluations cannot be compared case by case: different images, or different labels for them."""


class ThresholdSetError(CXRError):
    """A threshold set is invalid, missing, or its name is unsafe."""


class ReviewStoreError(CXRError):
    """A review verdict or session is invalid, or the review database cannot be used."""


class TrainingDivergedError(CXRError):
    """The training loss became non-finite and the weights can no longer be trusted."""


class UnsuitableImageError(ImageLoadError):
    """An image was read but cannot be a radiograph (blank, near-constant, too small, absurd shape)."""


class CorruptImageError(UnsuitableImageError):
    """An image decoded, but its pixel data was damaged in storage or transfer (decoder warnings,
    flat bands where a scan desynchronised); scoring it would judge the damage, not the film."""


class ReportError(CXRError):
    """A DICOM result object or PDF report cannot be made for an input (not DICOM, no study to attach to)."""


class PacsError(CXRError):
    """The PACS (DICOMweb server) cannot be reached, refuses the credentials, or answers with an error."""


class AccessDeniedError(CXRError):
    """The signed-in user's role does not allow an action (calling, adjudicating, exporting...), or
    they tried to act under another user's name; the message says which role would."""


class SignInError(CXRError):
    """A sign-in failed: wrong name or password, an account locked after failed attempts, a user the
    server has no role for, or a request from an address the server does not accept."""
