"""The optional API token: one bearer secret that guards every facerank endpoint doing work.

Why one shared token rather than users and roles: facerank's callers are its own components
(the local broker, the event source, the web page) and a few operators' tools (``facerank
query``, curl). What must not happen is a stranger on the network enrolling, ranking or
unloading; a single secret from a Kubernetes Secret (``FACERANK_API_TOKEN_FILE``) stops that
without an identity provider. Finer rights (who may upload, who may query) are the object
store's and the cluster's business: see SECURITY.md.

Why in the core: the same check guards the Flask functions (WSGI, through
:func:`functions.runtime.create_function_app`) and the KServe predictor (ASGI, through
:class:`BearerTokenMiddleware`), and the same header is what every client presents, so the
rules (scheme, constant-time comparison, the message) cannot drift apart.

Nothing here ever logs or echoes a token, the expected one or the one presented: a wrong
token may still be somebody's real secret for another system.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

from facerank.errors import UnauthorizedError

log = logging.getLogger(__name__)

SCHEME = "Bearer"
CHALLENGE = 'Bearer realm="facerank"'
"""``WWW-Authenticate`` of every refusal (RFC 6750)."""
MESSAGE = (
    "a valid API token is required: send 'Authorization: Bearer <token>' "
    "(clients read it from FACERANK_API_TOKEN or FACERANK_API_TOKEN_FILE)"
)

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[Mapping[str, Any]]]
Send = Callable[[Mapping[str, Any]], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def authorization_header(token: str) -> dict[str, str]:
    """The header a client sends to present ``token``; none when no token is configured."""
    return {"Authorization": f"{SCHEME} {token}"} if token else {}


def is_authorized(expected: str, authorization: str | None) -> bool:
    """Whether a request with this ``Authorization`` header may pass.

    Always, when no token is configured. Otherwise the header must be ``Bearer <expected>``,
    compared in constant time; both sides are hashed first, so not even the token's length
    shows in the timing.
    """
    if not expected:
        return True
    scheme, _, credentials = (authorization or "").partition(" ")
    presented = credentials.strip() if scheme.lower() == SCHEME.lower() else ""
    return same_token(presented, expected)


def same_token(presented: str, expected: str) -> bool:
    """Whether two tokens are equal, in constant time over their hashes: the one comparison
    of every credential facerank checks (the API token, the event source's webhook token)."""
    return hmac.compare_digest(_digest(presented), _digest(expected))


def require_token(expected: str, authorization: str | None) -> None:
    """Raise :class:`UnauthorizedError` unless :func:`is_authorized`."""
    if not is_authorized(expected, authorization):
        raise UnauthorizedError(MESSAGE)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class BearerTokenMiddleware:
    """ASGI middleware: every request needs the token, but GET and HEAD of ``open_paths``.

    KServe builds its FastAPI app itself; an ASGI middleware added before the server starts
    wraps every route it registers (V1, V2, the model repository's load and unload), so a
    route added by a later KServe release is guarded too instead of silently open. The open
    paths are for callers that cannot hold the secret: kubelet probes and metric scrapers.
    """

    def __init__(self, app: AsgiApp, *, token: str, open_paths: Collection[str]) -> None:
        if not token:
            raise ValueError("BearerTokenMiddleware needs a token; leave it out when unset")
        self.app = app
        self.token = token
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        client = scope.get("client") or ("-", 0)
        log.info(
            "refused %s %s from %s: no valid API token", _method(scope), scope["path"], client[0]
        )
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = json.dumps({"error": f"{UnauthorizedError.code}: {MESSAGE}"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", CHALLENGE.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _allowed(self, scope: Scope) -> bool:
        if _method(scope) in ("GET", "HEAD") and scope["path"] in self.open_paths:
            return True
        headers = dict(scope.get("headers") or ())
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        return is_authorized(self.token, authorization)


def _method(scope: Scope) -> str:
    return str(scope.get("method", "GET")).upper()
