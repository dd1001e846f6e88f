"""The web page's Flask app: the query page, identities, unknown groups to name, crops, an API.

Why the browser never calls the predictor itself: ``POST /api/query`` forwards the photo to the
predictor's V1 endpoint server-side, so there is one origin (no CORS), the predictor's address
stays internal, and this app bounds what it forwards (size cap, timeout) before the predictor
spends any work on it.

Why pages are rendered here and not by a front-end framework: everything but the query result
is known on the server, and Jinja's autoescaping is the single place where identity names (which
come from folder names people type) are made safe. The query result is built by a small script
with ``textContent`` only, for the same reason.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote

from flask import (
    Flask,
    Request,
    Response,
    abort,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from facerank.auth import authorization_header, is_authorized
from facerank.errors import BucketNotFoundError, InvalidIdentityError, ObjectNotFoundError
from facerank.gallery import Gallery, normalise_identity
from facerank.gallery.gallery import crop_png
from facerank.identities import name_group
from facerank.predictor import predict_url
from facerank.registry import ModelRegistry
from facerank.settings import Settings
from facerank.storage import ObjectStore
from facerank.unknown import UnknownFaces, UnknownGroupNotFoundError, listing

log = logging.getLogger(__name__)

TOP_K = 3
"""Identities shown per face: enough to see how close the runner-up is, few enough to read."""
PREDICT_TIMEOUT_S = 30.0
"""A query that takes longer is answered 503: the visitor should retry rather than stare."""
MULTIPART_OVERHEAD = 64 * 1024
"""Room for the form envelope on top of the image-size limit in ``MAX_CONTENT_LENGTH``."""
NOTHING_ENROLLED = (BucketNotFoundError, ObjectNotFoundError)
"""A gallery bucket nobody has enrolled into yet is an empty gallery, not a server error."""
FACE_ID = re.compile(r"[0-9a-f]{24}-[0-9]{1,4}")
"""Shape of :func:`facerank.gallery.records.face_id`; anything else never reaches the store."""
CROP_CACHE = "public, max-age=31536000, immutable"
"""A face id is derived from the photo's content version, so its crop never changes."""
SECURITY_HEADERS = {
    # Only our own script, styles and images, plus blob: for the photo being queried.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


class QueryError(Exception):
    """A query the page answers with ``{"error": message}`` and ``status``."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def create_app(
    settings: Settings,
    store: ObjectStore,
    predictor_url: str,
    *,
    timeout_s: float = PREDICT_TIMEOUT_S,
) -> Flask:
    """The web app over ``store``'s gallery, querying the predictor at ``predictor_url``."""
    if not predictor_url.startswith(("http://", "https://")):
        raise ValueError(f"predictor URL must be http(s), not {predictor_url!r}")
    predict_at = predict_url(predictor_url)
    gallery = Gallery(store, settings.gallery_bucket)
    unknown = UnknownFaces(store, settings.gallery_bucket)
    registry = ModelRegistry(store, settings.models_bucket)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_image_bytes + MULTIPART_OVERHEAD
    limit = f"{settings.max_image_bytes / (1024 * 1024):.3g} MB"

    app.add_template_global(identity_url)

    @app.context_processor
    def gallery_model() -> dict[str, str]:
        # Read per request: a promoted model changes the version without restarting the page.
        return {"gallery_model_version": registry.describe_active()}

    @app.after_request
    def security_headers(response: Response) -> Response:
        response.headers.update(SECURITY_HEADERS)
        return response

    @app.get("/healthz")
    def healthz() -> tuple[dict[str, str], int]:
        return {"status": "ok"}, 200

    @app.get("/")
    def query_page() -> str:
        return render_template("query.html", top_k=TOP_K, limit=limit)

    @app.post("/api/query")
    def query() -> tuple[Response, int]:
        try:
            image = _uploaded_image(request, settings.max_image_bytes, limit)
            prediction = _predict(predict_at, image, timeout_s, settings.api_token)
        except QueryError as exc:
            return jsonify(error=str(exc)), exc.status
        return jsonify(_with_links(prediction)), 200

    @app.get("/identities")
    def identities() -> str:
        try:
            counts = gallery.identities()
        except BucketNotFoundError:
            counts = {}
        listing = sorted(counts.items(), key=lambda item: item[0].casefold())
        return render_template("identities.html", identities=listing)

    @app.get("/identities/<name>")
    def identity(name: str) -> str:
        try:
            records = list(gallery.records(name))
        except (InvalidIdentityError, *NOTHING_ENROLLED):
            abort(404)
        if not records:
            abort(404)
        return render_template("identity.html", name=records[0].identity, records=records)

    @app.get("/faces/<face_id>/crop.png")
    def crop(face_id: str) -> Response:
        if not FACE_ID.fullmatch(face_id):
            abort(404)
        try:
            pixels = gallery.crop(face_id)
        except NOTHING_ENROLLED:
            abort(404)
        return _png_response(pixels, face_id)

    @app.get("/unknown")
    def unknown_groups() -> str:
        try:
            groups = listing(unknown)["groups"]
        except NOTHING_ENROLLED:
            groups = []
        return render_template(
            "unknown.html",
            groups=groups,
            needs_token=bool(settings.api_token),
            named=request.args.get("named", ""),
            identity=request.args.get("as", ""),
        )

    @app.post("/unknown/<group>/name")
    def name_unknown(group: str) -> Response | tuple[str, int]:
        """Name a group: its photos are copied into the faces bucket and enroll by events.

        This writes to the faces bucket, so with an API token set the form must carry it
        (compared in constant time); the page never holds it, the person types it.
        """
        if settings.api_token and not is_authorized(
            settings.api_token, f"Bearer {request.form.get('token', '')}"
        ):
            return _naming_refused(403, "The API token is missing or wrong.")
        name = request.form.get("identity", "")
        try:
            name_group(store, settings.faces_bucket, unknown, group, name)
        except InvalidIdentityError as exc:
            return _naming_refused(400, str(exc))
        except UnknownGroupNotFoundError:
            abort(404)
        identity = normalise_identity(name)
        return redirect(url_for("unknown_groups", named=group, **{"as": identity}), code=303)

    @app.get("/unknown/faces/<face_id>/crop.png")
    def unknown_crop(face_id: str) -> Response:
        if not FACE_ID.fullmatch(face_id):
            abort(404)
        try:
            pixels = unknown.crop(face_id)
        except NOTHING_ENROLLED:
            abort(404)
        return _png_response(pixels, face_id)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_exc: RequestEntityTooLarge) -> tuple[Response, int]:
        return jsonify(error=f"The image is larger than the {limit} limit."), 413

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[str, int]:
        status = exc.code or 500
        return render_template("error.html", status=status, title=exc.name), status

    return app


def _png_response(pixels: Any, face_id: str) -> Response:
    """A face crop as PNG, cached for good: a face id names one photo version's face."""
    response = Response(crop_png(pixels), mimetype="image/png")
    response.headers["Cache-Control"] = CROP_CACHE
    response.set_etag(face_id)
    return response.make_conditional(request)


def _naming_refused(status: int, message: str) -> tuple[str, int]:
    return render_template("error.html", status=status, title=message), status


def _uploaded_image(req: Request, max_bytes: int, limit: str) -> bytes:
    """The bytes of the form's ``image`` file, refusing a missing, empty or oversized one."""
    upload = req.files.get("image")
    data = upload.read() if upload is not None else b""
    if not data:
        raise QueryError("Choose an image file to search for.", 400)
    if len(data) > max_bytes:
        raise QueryError(f"The image is larger than the {limit} limit.", 413)
    return data


def _predict(url: str, image: bytes, timeout_s: float, api_token: str) -> dict[str, Any]:
    """The predictor's V1 prediction for one image; :class:`QueryError` says what went wrong.

    The page presents the API token (when set) server-side: the browser never holds it. The
    predictor's own 400 message is passed on (it names the problem: ``not_an_image`` ...);
    an unreachable or slow predictor is a 503, so the page can say "try again later".
    """
    body = {"instances": [{"image": {"b64": base64.b64encode(image).decode()}, "top_k": TOP_K}]}
    # The scheme was checked in create_app: this only ever opens http(s).
    call = urllib.request.Request(  # noqa: S310
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **authorization_header(api_token)},
        method="POST",
    )
    try:
        with urllib.request.urlopen(call, timeout=timeout_s) as reply:  # noqa: S310
            [prediction] = json.load(reply)["predictions"]
            return prediction
    except urllib.error.HTTPError as exc:
        message = _error_text(exc.read())
        if exc.code == 400:
            raise QueryError(message, 400) from None
        if exc.code == 401:
            log.error("the predictor refused this page's API token (FACERANK_API_TOKEN)")
            raise QueryError(
                "The face search service refused this page's credentials; "
                "its operator must set the same API token on both.",
                502,
            ) from None
        log.warning("predictor answered %s: %s", exc.code, message)
        raise QueryError(f"The predictor failed ({exc.code}): {message}", 502) from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        log.warning("predictor unreachable at %s: %s", url, exc)
        raise QueryError(
            "The face search service is not reachable right now. Try again in a moment.", 503
        ) from None


def _error_text(body: bytes) -> str:
    """KServe's ``{"error": "..."}`` message, or the raw body when it is not that shape."""
    try:
        message = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        message = body.decode("utf-8", "replace")
    return str(message)[:500]


def identity_url(name: str) -> str:
    """The page of identity ``name``, every reserved character quoted.

    Not ``url_for``: werkzeug leaves ``/`` unquoted in a path segment, and a tampered record's
    name must not be able to point a link anywhere but at its own (404) page.
    """
    return url_for("identities") + "/" + quote(name, safe="")


def _with_links(prediction: dict[str, Any]) -> dict[str, Any]:
    """The prediction with the page's URLs for each match, so the script builds no URLs."""
    for face in prediction["faces"]:
        for match in face["matches"]:
            match["crop_url"] = url_for("crop", face_id=match["face_id"])
            match["identity_url"] = identity_url(match["identity"])
    return prediction
