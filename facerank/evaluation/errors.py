"""Why an evaluation could not produce numbers, as typed errors the CLI turns into exit 2."""

from facerank.errors import FacerankError


class EvaluationError(FacerankError):
    """The faces at hand cannot yield the metrics: too few identities, or no genuine pair."""

    code = "evaluation_failed"


class DatasetError(EvaluationError):
    """``DATASET_DIR`` is not a readable folder of ``<identity>/<image>`` files."""

    code = "invalid_dataset"


class PairsFileError(EvaluationError):
    """A pairs file (LFW's format) is unreadable, malformed at a line, or names no pair."""

    code = "invalid_pairs_file"
