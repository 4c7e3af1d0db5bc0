"""Exception hierarchy of the shared core. Each role package has its own base class that
derives from RecsysError, so callers can catch one family without string matching."""


class RecsysError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(RecsysError):
    """A setting is missing or invalid; raised once, at start-up."""


class LocalStackError(RecsysError):
    """An embedded broker or Redis could not be started or did not answer in time."""


class ModelNotFound(RecsysError):
    """No model version is published (yet), or the requested one is gone."""


class ModelIntegrityError(RecsysError):
    """A model version is incomplete or inconsistent (shapes, NaN/Inf, missing keys)."""


class NotEnoughData(RecsysError):
    """The data is too small to fit or to evaluate a model."""


class NonFiniteFactors(RecsysError):
    """A fit produced NaN or Inf factors; they are never published."""
