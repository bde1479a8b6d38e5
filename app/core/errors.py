"""Why a request could not be served, in the service's own terms.

The API layer maps each class to a status code and an ``error_type`` (app/api/errors.py);
nothing here knows about HTTP.
"""

from __future__ import annotations


class ServiceError(Exception):
    """A request the service could not serve; the message is safe to show the client."""


class InvalidInput(ServiceError):
    """The input breaks a rule of the model or the API (too long without truncation, empty)."""


class TooManyInputs(ServiceError):
    """More inputs in one request, or a larger body, than the configured limit."""


class UnknownModel(ServiceError):
    pass


class Unsupported(ServiceError):
    """A valid request this model or service cannot do (classify without a head, token ids)."""


class Unavailable(ServiceError):
    """Not serving now (loading, failed, shutting down): retry, perhaps on another replica."""

    retry_after = 1


class Overloaded(ServiceError):
    """The model's queue is full: retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DeadlineExceeded(ServiceError):
    pass


class InferenceFailed(ServiceError):
    """The forward pass of the batch holding this input raised (details in the log only)."""


class LoadFailed(ServiceError):
    """Model loading failed; the process stays up to say so."""


class ClientDisconnected(Exception):
    """The client went away before its result was ready: nobody to answer (not a ServiceError,
    so no exception handler turns it into a response; the middleware logs it as 499)."""
