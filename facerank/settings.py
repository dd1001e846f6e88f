"""One settings object for every component, read from ``FACERANK_*`` variables and CLI flags.

Why one object: the same code runs as a Knative function, a KServe predictor, a training pod
and under ``facerank up``; each gets its configuration the same way (environment, as Kubernetes
injects it), and flags only override. Secrets may come from a mounted file
(``FACERANK_S3_SECRET_KEY_FILE``), as Kubernetes Secrets are mounted, and never appear in
``repr`` or logs.

Every ``FACERANK_*`` variable a process reads is a field here, read once by its entry point,
which hands the object down; nothing else reads the environment for a setting. The variables
that are not settings but protocol stay with the code that speaks it: ``FACERANK_TRAIN_*``
(what the retrain function tells each training worker it starts, :mod:`training.cluster` and
:mod:`training.worker`), and Knative's ``PORT``, ``K_SINK`` and ``K_SERVICE``.

Kubernetes service links: the kubelet gives a pod ``<SERVICE>_PORT=tcp://...`` for every
Service of its namespace, so a Service ``facerank-web`` would set ``FACERANK_WEB_PORT``. Such
a value is refused (``must be an integer``), never half-parsed; the manifests turn the links
off (``enableServiceLinks: false``), which ``tests/test_infra_manifests.py`` checks.

Why hand-written and not pydantic-settings (installed with KServe): a prototype was not
smaller or clearer. Field constraints replace the range checks of :meth:`Settings.validate`,
but reading a given mapping (tests and ``facerank up`` pass one; its sources read
``os.environ``) and the ``*_FILE`` secrets each need a custom settings source, and its
messages ("FACERANK_PREDICTOR_PORT Input should be less than 65536", "Value error, ...")
need a translation table back into ours, which name the variable and what is allowed; the
cross-field rules (``s3`` needs an endpoint) and the token check stay hand-written either way.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args

from facerank.errors import ConfigError
from facerank.serving import loopback_url

StoreKind = Literal["folder", "s3"]
AlignKind = Literal["landmarks", "eyes", "box"]
DetectorKind = Literal["ssd", "haar"]
EnrollFaces = Literal["primary", "largest", "all"]
TrainingBackend = Literal["local", "kubernetes"]

ENV_PREFIX = "FACERANK_"
_REPO_ROOT = Path(__file__).resolve().parent.parent
_API_TOKEN = re.compile(r"[\x21-\x7e]{16,4096}")


def env_var(name: str) -> str:
    """The variable that sets field ``name``: ``FACERANK_<NAME>``, for messages and for
    writing a child's environment."""
    return ENV_PREFIX + name.upper()


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/facerank`` (``~/.local/share/facerank``): user data, not the repo."""
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "facerank"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/facerank`` (``~/.cache/facerank``): re-creatable downloads and exports."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "facerank"


@dataclass(frozen=True)
class Settings:
    """Configuration shared by every facerank process. Field ``x`` is read from ``FACERANK_X``."""

    data_dir: Path = field(default_factory=default_data_dir)
    """Root of local state; the folder store keeps bucket ``faces`` in ``buckets/faces``."""

    cache_dir: Path = field(default_factory=default_cache_dir)
    """Re-creatable files: npm tarballs (``npm/``) and converted or fetched models (``models/``).
    Kept apart from ``data_dir`` so a fresh gallery reuses what setup downloaded once."""

    shared_dir: Path = Path()
    """The volume training workers, re-embedding and the predictor share (an RWX PVC at
    ``/shared`` in a cluster): training runs and promoted model exports. Empty (the default):
    ``data_dir/shared``, filled in when the object is made, so it is always a real path."""

    store: StoreKind = "folder"
    """``folder`` (embedded default) or ``s3`` (MinIO or any S3 endpoint)."""

    s3_endpoint: str = ""
    """``http(s)://host:port`` of the S3/MinIO server; required when ``store`` is ``s3``."""

    s3_access_key: str = field(default="", repr=False)
    s3_secret_key: str = field(default="", repr=False)
    s3_region: str = "us-east-1"

    faces_bucket: str = "faces"
    """Where people drop photos: ``faces/<identity>/<file>``."""

    queries_bucket: str = "queries"
    """Where photos to identify are dropped (any key); each gets ``results/<key>.json`` beside
    it in this bucket, written by the identify function."""

    gallery_bucket: str = "gallery"
    """Aligned crops, metadata and per-model-version embeddings."""

    models_bucket: str = "models"

    model: str = "auto"
    """The model a new gallery starts with: ``auto`` (the pretrained ``dlib-r34-v1`` when
    ``facerank models fetch`` has converted it, else ``lbp-v0``), a built-in or converted
    version name, or the path of an exported model directory. Once the first enrollment has
    created the model pointer, that pointer decides (``facerank models activate`` moves it)."""

    predictor_port: int = 8080

    predictor_grpc_port: int = 8083
    """The predictor's Open Inference Protocol (V2) gRPC port, beside its REST port (KServe's
    default, 8081, is the web page's here); 0: no gRPC. It listens on ``FACERANK_LISTEN_HOST``
    and requires the API token as REST does."""

    predictor_url: str = ""
    """Base URL of the predictor the web page and the identify function call (a cluster
    Service address); empty: this machine's ``predictor_port``."""

    match_threshold: float | None = None
    """Largest embedding distance the predictor calls a ``match``. Unset: each model's own
    calibrated pair threshold (its card; 0.40 for ``dlib-r34-v1``, FAR 1% on AT&T; 0.60 for
    ``lbp-v0``), which moves with the model on a switch, lowered for the gallery's size (see
    ``open_set_far``). Set it only to fix one threshold for every model and gallery."""

    open_set_far: float = 0.01
    """The chance the predictor may call a stranger a match with *some* enrolled identity: the
    match threshold shrinks with the gallery's size to keep it (``facerank/openset.py``),
    never beyond the model's pair threshold. 0: the pair threshold alone. Unused when
    ``match_threshold`` is set."""

    gallery_refresh_s: float = 2.0
    """Seconds between the predictor's polls of the gallery for enrolled and removed faces."""

    reindex_workers: int = 1
    """Processes that re-embed the gallery on a model switch, each loading the model and
    taking a shard of the records (measured rates: ``bench/bench_gallery_scale.py``)."""

    search_approximate_above: int = 2_000_000
    """Galleries with more faces than this hold their large index segments as float16 in FAISS
    (half the memory; recall@10 against the exact search in ``bench/bench_gallery_scale.py``);
    0 keeps every search exact."""

    listen_host: str = "127.0.0.1"
    """Address every facerank process binds: loopback unless told otherwise (containers set
    ``0.0.0.0``), because a laptop is not a server."""

    broker_port: int = 8090
    """Local broker ingress (embedded mode; in a cluster the Knative Broker replaces it)."""

    broker_host: str = ""
    """Address the local broker binds; empty: ``listen_host``."""

    broker_name: str = ""
    """Which Broker of the eventing manifests the local broker runs; empty: the only one."""

    broker_subscribers: str = ""
    """``name=url,...``: where each Trigger's ``subscriber.ref`` listens on this machine
    (``facerank up`` sets it; :mod:`facerank.broker.subscribers`)."""

    source_port: int = 8091
    """Bucket event source: MinIO webhook and SNS endpoints."""

    source_host: str = ""
    """Address the event source binds; empty: ``listen_host``."""

    enroll_port: int = 8092

    identify_port: int = 8093
    """The identify function (``python -m functions.identify``) under ``facerank up``."""

    predictor_api_token: str = field(default="", repr=False)
    """Token the identify function presents to the predictor; empty: ``api_token``. Apart
    from ``api_token`` so that in a cluster identify can call the guarded predictor while
    taking events from the Knative Broker, which presents no token (NetworkPolicies guard
    the functions there)."""

    identify_top_k: int = 3
    """Identities ranked per face in a query photo's result and ``face.identified`` event."""

    notify_port: int = 8095
    """The notify function (``python -m functions.notify``) under ``facerank up``."""

    notify_webhook_url: str = field(default="", repr=False)
    """Where the notify function POSTs (a chat tool's incoming webhook: its URL usually holds
    a secret, so mount it and name the file in ``FACERANK_NOTIFY_WEBHOOK_URL_FILE``); empty:
    notifications are off."""

    notify_filter: str = "unknown"
    """Which ``face.identified`` events notify: comma-separated identities, and ``unknown``
    for any face that matched nobody; ``*`` for every identified photo."""

    web_port: int = 8081
    """The web page (``python -m inference.web``); it reaches the predictor server-side."""

    webhook_token: str = field(default="", repr=False)
    """Bearer token MinIO must send to the webhook (its ``auth_token``); empty: not checked."""

    api_token: str = field(default="", repr=False)
    """Bearer token the predictor and the functions require, and that ``facerank query``, the
    web page, the local broker and the event source present (``Authorization: Bearer``);
    empty: not checked. Mount it as a Secret and name the file in ``FACERANK_API_TOKEN_FILE``."""

    reconcile_interval: int = 60
    """Seconds between reconcile passes of the event source (0: only at start)."""

    enroll_faces: EnrollFaces = "primary"
    """``primary``: enroll the face the photo is about (large and central,
    :func:`~facerank.faces.primary.prominence`); ``largest``: its largest face; ``all``: every
    face found."""

    eventing_dir: Path = field(default_factory=lambda: _REPO_ROOT / "infra" / "base" / "eventing")
    """Knative Broker and Trigger manifests; the local broker routes by the same files."""

    detector: DetectorKind = "ssd"
    """Face detector: ``ssd`` (face-api's SSD MobileNet v1, converted by ``facerank models
    fetch``; Haar with a warning until it is) or ``haar`` (OpenCV's cascade, no weights
    needed)."""

    min_face_size: int = 40
    """Smallest face side, in pixels of the original image, that detection reports."""

    max_faces: int = 20
    """At most this many faces (largest first) are reported per image."""

    align: AlignKind = "landmarks"
    """``landmarks``: dlib's chip from 68 landmarks (face-api's landmark net, exported into
    ``cache_dir/models`` on first use), falling back to the eyes; ``eyes``: align on detected
    eyes, falling back to the box; ``box``: always the box."""

    min_face_confidence: float | None = None
    """Detections scoring below this are dropped. Unset: the threshold measured for the
    detector in use (SSD 0.5, Haar 0.8: their scores are on different scales)."""

    max_image_bytes: int = 25 * 1024 * 1024
    max_image_pixels: int = 50_000_000
    """Decompression-bomb guard: header-declared width x height above this is refused."""

    retrain_port: int = 8094
    """The retrain function (``python -m functions.retrain``) under ``facerank up``."""

    training_backend: TrainingBackend = "local"
    """``local``: worker processes on this machine; ``kubernetes``: an Indexed Job per run."""

    namespace: str = "facerank"
    """Kubernetes namespace the retrain function creates training Jobs in (its own)."""

    training_template: str = "facerank-trainer"
    """Name of the PodTemplate whose pod spec each training Job's workers get."""

    retrain_workers: int = 2
    """MultiWorkerMirroredStrategy workers of a run a request does not size."""

    retrain_epochs: int = 3
    retrain_steps_per_epoch: int = 50
    retrain_backbone: str = "pretrained"
    """``pretrained`` (fine-tune dlib-r34-v1), ``scratch`` (a small CPU-sized network) or
    ``imagenet`` (needs the internet once); see ``training/backbones.py``."""
    retrain_deadline_s: int = 3600
    """A run still unfinished after this long is stopped and counts as failed."""

    retrain_after_enrollments: int = 0
    """Start a run by itself once this many photos were enrolled since the last run (0: off)."""

    promotion_margin: float = 0.0
    """A trained model is promoted only if its held-out TAR at FAR 1e-2 beats the active
    model's on the same identities by more than this."""

    log_level: str = "INFO"

    stop_timeout_s: float | None = None
    """Under the images' launcher (:mod:`facerank.launch`), how long a component has to stop by
    itself after SIGTERM before it is killed. Unset: no limit but the pod's grace period (a
    server drains). The trainer's pod sets it below its grace period: TensorFlow swallows the
    signal in a training worker."""

    def __post_init__(self) -> None:
        if self.shared_dir == Path():
            object.__setattr__(self, "shared_dir", self.data_dir / "shared")

    @property
    def predictor_base_url(self) -> str:
        """Where the predictor answers: ``predictor_url``, else this machine's port."""
        return self.predictor_url or loopback_url(self.predictor_port)

    @property
    def predictor_token(self) -> str:
        """The token identify presents to the predictor: ``predictor_api_token``, else
        ``api_token``."""
        return self.predictor_api_token or self.api_token

    @property
    def buckets_dir(self) -> Path:
        """Root of the folder store; each bucket is a sub-folder."""
        return self.data_dir / "buckets"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read ``FACERANK_*`` from ``env`` (default ``os.environ``); ``overrides`` win.

        Overrides whose value is ``None`` are ignored, so argparse results can be passed
        straight through. Unknown override names and unparsable values raise
        :class:`ConfigError` naming the variable.
        """
        env = os.environ if env is None else env
        known = {f.name: f for f in fields(cls)}
        unknown = set(overrides) - set(known)
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {}
        for name, f in known.items():
            raw = _read_env(env, name)
            if raw is not None:
                values[name] = _parse(name, f.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        for name in ("data_dir", "cache_dir", "shared_dir"):
            if name in values:
                values[name] = Path(values[name]).expanduser()
        settings = cls(**values)
        settings.validate()
        return settings

    @classmethod
    def one_from_env(cls, name: str, env: Mapping[str, str] | None = None) -> Any:
        """Setting ``name`` alone, parsed and validated as :meth:`from_env` would.

        For a process that needs only that one (the images' launcher): the others are its
        component's to read, and to report when they are wrong.
        """
        env = os.environ if env is None else env
        known = {f.name: f for f in fields(cls)}
        if name not in known:
            raise ConfigError(f"unknown setting(s): {name}")
        raw = _read_env(env, name)
        if raw is None:
            return getattr(cls(), name)
        settings = cls(**{name: _parse(name, known[name].type, raw)})
        settings.validate()
        return getattr(settings, name)

    def to_env(self) -> dict[str, str]:
        """``FACERANK_*`` variables reproducing these settings in a child process.

        Secrets (fields hidden from ``repr``) are left out: children read them where this
        process did, from the environment or the mounted file, so they never travel further.
        Unset optional fields are left out too, so children fall back to the same default.
        """
        return {
            env_var(f.name): str(getattr(self, f.name))
            for f in fields(self)
            if f.repr and getattr(self, f.name) is not None
        }

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied and validated."""
        settings = dataclasses.replace(self, **changes)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values no component could work with."""
        if self.store not in ("folder", "s3"):
            raise ConfigError(f"FACERANK_STORE must be 'folder' or 's3', not {self.store!r}")
        if self.store == "s3" and not self.s3_endpoint:
            raise ConfigError("FACERANK_S3_ENDPOINT is required when FACERANK_STORE=s3")
        if self.align not in ("landmarks", "eyes", "box"):
            raise ConfigError(
                f"FACERANK_ALIGN must be 'landmarks', 'eyes' or 'box', not {self.align!r}"
            )
        if self.detector not in ("ssd", "haar"):
            raise ConfigError(f"FACERANK_DETECTOR must be 'ssd' or 'haar', not {self.detector!r}")
        if self.s3_endpoint and not self.s3_endpoint.startswith(("http://", "https://")):
            raise ConfigError("FACERANK_S3_ENDPOINT must start with http:// or https://")
        if self.match_threshold is not None and not 0.0 < self.match_threshold <= 2.0:
            raise ConfigError("FACERANK_MATCH_THRESHOLD must be in (0, 2]: unit-vector distances")
        if not 0.0 <= self.open_set_far < 1.0:
            raise ConfigError("FACERANK_OPEN_SET_FAR must be in [0, 1)")
        if self.gallery_refresh_s <= 0:
            raise ConfigError("FACERANK_GALLERY_REFRESH_S must be positive")
        if self.search_approximate_above < 0:
            raise ConfigError("FACERANK_SEARCH_APPROXIMATE_ABOVE must not be negative")
        if self.min_face_confidence is not None and not 0.0 <= self.min_face_confidence < 1.0:
            raise ConfigError("FACERANK_MIN_FACE_CONFIDENCE must be in [0, 1)")
        ports = ("predictor_port", "broker_port", "source_port", "enroll_port", "web_port")
        for name in (*ports, "retrain_port", "identify_port", "notify_port"):
            if not 0 < getattr(self, name) < 65536:
                raise ConfigError(f"{env_var(name)} out of range: {getattr(self, name)}")
        if not 0 <= self.predictor_grpc_port < 65536:
            port = self.predictor_grpc_port
            raise ConfigError(f"{env_var('predictor_grpc_port')} out of range: {port} (0: off)")
        if self.training_backend not in ("local", "kubernetes"):
            raise ConfigError("FACERANK_TRAINING_BACKEND must be 'local' or 'kubernetes'")
        for name in (
            "reindex_workers",
            "retrain_workers",
            "retrain_epochs",
            "retrain_steps_per_epoch",
            "retrain_deadline_s",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{env_var(name)} must be positive")
        for name in ("predictor_url", "notify_webhook_url"):
            value = getattr(self, name)
            if value and not value.startswith(("http://", "https://")):
                raise ConfigError(f"{env_var(name)} must start with http:// or https://")
        if not 0 < self.identify_top_k <= 100:
            raise ConfigError("FACERANK_IDENTIFY_TOP_K must be in 1..100")
        if self.retrain_after_enrollments < 0:
            raise ConfigError("FACERANK_RETRAIN_AFTER_ENROLLMENTS must not be negative")
        if self.enroll_faces not in get_args(EnrollFaces):
            raise ConfigError("FACERANK_ENROLL_FACES must be 'primary', 'largest' or 'all'")
        if self.reconcile_interval < 0:
            raise ConfigError("FACERANK_RECONCILE_INTERVAL must not be negative")
        if self.api_token and not _API_TOKEN.fullmatch(self.api_token):
            # Never echo the value: a typo'd secret is still mostly the secret.
            raise ConfigError(
                "FACERANK_API_TOKEN must be 16 to 4096 printable ASCII characters without "
                "spaces (it travels in an HTTP header; shorter ones can be guessed)"
            )
        for name in ("min_face_size", "max_faces", "max_image_bytes", "max_image_pixels"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{env_var(name)} must be positive")
        if self.stop_timeout_s is not None and self.stop_timeout_s <= 0:
            raise ConfigError(f"{env_var('stop_timeout_s')} must be positive")


def _read_env(env: Mapping[str, str], name: str) -> str | None:
    """``FACERANK_NAME``, or the contents of the file named by ``FACERANK_NAME_FILE``."""
    var = env_var(name)
    if var in env:
        return env[var]
    path = env.get(var + "_FILE")
    if path is None:
        return None
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{var}_FILE points at an unreadable file: {exc.strerror}") from None


def _parse(name: str, type_name: Any, raw: str) -> Any:
    """Convert one environment string to the field's type (annotations are strings here)."""
    var = env_var(name)
    if type_name == "int":
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{var} must be an integer, not {raw!r}") from None
    if type_name in ("float", "float | None"):
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{var} must be a number, not {raw!r}") from None
    if type_name == "Path":
        return Path(raw)
    return raw
