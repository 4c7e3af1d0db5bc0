"""Errors of the trainer; all derive from TrainerError (itself a RecsysError)."""

from recsys.errors import RecsysError


class TrainerError(RecsysError):
    """Base of every error the trainer raises on purpose."""


class HistoryError(TrainerError):
    """The on-disk history is unreadable or inconsistent."""


class PublishError(TrainerError):
    """A model version could not be written, activated or rolled back."""
