"""The base of every error facerank raises on purpose, and the errors several packages share.

Here: the errors more than one package raises or handles (settings, events, credentials,
images, the object store, models). An error that one module raises and its own component
handles lives beside that module, subclassing :class:`FacerankError` (``training/errors.py``,
``facerank/predictor.py``, ``functions/retrain/kubernetes.py``, ...), so a reader sees what
can go wrong where it goes wrong, and this file stays a short list of what crosses packages.
Either way each error has one class and one ``code``, unique across the tree:
``tests/test_errors.py`` checks it.

Each class carries a stable ``code`` (used in rejection events, HTTP error bodies and CLI
output, so clients can branch on it without parsing prose) and says whether retrying the same
request can succeed (``retryable``): the event handlers map that to a retryable status so the
broker backs off instead of dead-lettering a photo because the store blinked.
"""


class FacerankError(Exception):
    """Base of all deliberate facerank errors; anything else escaping is a bug."""

    code = "error"
    retryable = False

    def to_json(self) -> dict[str, str]:
        """The machine-readable form: the stable ``code`` and the human ``message`` (CLI
        output, HTTP error bodies, rejection events, a training run's result)."""
        return {"code": self.code, "message": str(self)}


class ConfigError(FacerankError):
    """A setting from the environment or a flag has an invalid value."""

    code = "invalid_config"


class UnauthorizedError(FacerankError):
    """A token is configured and the request did not carry it (the API token, or the event
    source's webhook token); compared by :func:`facerank.auth.same_token`."""

    code = "unauthorized"


class InvalidEventError(FacerankError):
    """A request is not a CloudEvent (binary or structured HTTP mode) we can read."""

    code = "bad_event"


class PortInUseError(ConfigError):
    """A port a component is configured to listen on is taken by another process: a setting
    to change (or a process to stop), so it is a configuration error."""

    code = "port_in_use"


# --- images -----------------------------------------------------------------------------


class InvalidImageError(FacerankError):
    """The bytes cannot be used as a photo; subclasses say why."""

    code = "invalid_image"


class UnreadableFileError(InvalidImageError):
    """The file could not be read at all (missing, a directory, no permission)."""

    code = "unreadable_file"


class EmptyImageError(InvalidImageError):
    code = "empty_image"


class ImageTooLargeError(InvalidImageError):
    """The encoded file is larger than the configured byte limit."""

    code = "image_too_large"


class DecompressionBombError(InvalidImageError):
    """The header declares more pixels than allowed; refused before decoding."""

    code = "decompression_bomb"


class NotAnImageError(InvalidImageError):
    code = "not_an_image"


class UnsupportedImageFormatError(InvalidImageError):
    """A real image, but in a format outside the allow-list (e.g. EPS, PSD, ICO)."""

    code = "unsupported_format"


class TruncatedImageError(InvalidImageError):
    code = "truncated_image"


class CorruptImageError(InvalidImageError):
    """The header parsed but the pixel data did not decode."""

    code = "corrupt_image"


class NoFaceError(FacerankError):
    """A valid photo in which the detector found no face (large enough and confident enough)."""

    code = "no_face"


class FaceTooSmallError(NoFaceError):
    """Faces were seen, but all smaller than the configured minimum size."""

    code = "face_too_small"


class InvalidIdentityError(FacerankError):
    """A photo's key does not name a usable identity (``faces/<identity>/<file>``)."""

    code = "invalid_identity"


# --- object storage ----------------------------------------------------------------------


class StoreError(FacerankError):
    code = "store_error"


class InvalidKeyError(StoreError):
    """A bucket name or object key is malformed or would escape its bucket."""

    code = "invalid_key"


class InvalidMetadataError(StoreError):
    """User metadata must be lowercase ``[a-z0-9-]`` names with printable ASCII values."""

    code = "invalid_metadata"


class ObjectNotFoundError(StoreError):
    code = "object_not_found"


class BucketNotFoundError(StoreError):
    code = "bucket_not_found"


class KeyConflictError(StoreError):
    """The folder store cannot hold both ``a`` and ``a/b``: a file sits where a folder must."""

    code = "key_conflict"


class PreconditionFailedError(StoreError):
    """A conditional put found the object changed (or present, or absent) since it was read.

    The caller lost a race with another writer: re-read and decide again, never overwrite.
    """

    code = "precondition_failed"


class StoreUnavailableError(StoreError):
    """The store could not be reached or failed transiently; the same call may succeed later."""

    code = "store_unavailable"
    retryable = True


class GalleryIndexDamagedError(FacerankError):
    """A gallery index's manifest is unreadable or lists a segment that is gone.

    The records are intact; ``facerank gallery reindex --rebuild`` builds the index anew.
    """

    code = "gallery_index_damaged"


# --- models ------------------------------------------------------------------------------


class ModelLoadError(FacerankError):
    """An embedder could not be loaded: missing files, bad metadata, or a signature mismatch."""

    code = "model_load_failed"


class ChipShapeError(FacerankError):
    """Face chips handed to an embedder do not match the chip size it declared."""

    code = "chip_shape_mismatch"
