"""The server's own exception types; ``app.py`` maps each to one HTTP status in one table.

Every message is meant for the person who sent the request or configured the server: it names
the thing that is wrong and how to fix it.
"""

from __future__ import annotations


class StorageError(RuntimeError):
    """The artifact could not be fetched."""


class ArtifactTooLargeError(StorageError):
    """The artifact is over ``--max-model-bytes``; the download was stopped (and its part removed)."""

    def __init__(self, shown_uri: str, limit: int) -> None:
        super().__init__(
            f"model artifact {shown_uri} is over the {limit}-byte limit (--max-model-bytes, env "
            "ROLLWISE_MAX_MODEL_BYTES): the download was stopped and removed; raise the limit if the "
            "artifact really is this large"
        )


class ArtifactError(RuntimeError):
    """The artifact was fetched but refused: digest mismatch, wrong format, load failure."""


class ModelNotFoundError(LookupError):
    """The URL names a model (or version) this server does not serve."""


class ModelNotReadyError(RuntimeError):
    """The model is not loaded (yet, or it failed to load); readiness says why."""


class InputError(ValueError):
    """The tensors are valid OIP but do not fit the model (names, shapes, datatypes)."""


class BodyTooLargeError(ValueError):
    """The request body is over ``--max-body-bytes``."""


class PredictError(RuntimeError):
    """The model raised while predicting, and no fallback answered."""


class DeadlineError(TimeoutError):
    """The model missed ``--deadline-ms`` and no fallback answered."""


class RequestAbortedError(ConnectionError):
    """The connection closed before the whole request arrived (the client left, was too slow for
    ``--request-timeout-seconds``, or the server is shutting down)."""


class BusyError(RuntimeError):
    """A bounded resource (one explanation per process) is in use; the client may retry."""
