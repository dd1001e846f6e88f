"""``python -m inference.web``: the web page as ``facerank up`` and its container run it.

Port from ``PORT`` (what Knative injects) else ``FACERANK_WEB_PORT``; the predictor from
``FACERANK_PREDICTOR_URL`` (a cluster Service address) else this machine's predictor port, as
``facerank up`` lays it out.
"""

from __future__ import annotations

import logging

from facerank.serving import listen_port, serve
from facerank.settings import Settings
from facerank.storage import open_store
from inference.web.app import create_app


def main() -> None:
    settings = Settings.from_env()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s web %(levelname)s %(message)s"
    )
    app = create_app(settings, open_store(settings), settings.predictor_base_url)
    serve(
        app,
        host=settings.listen_host,
        port=listen_port(settings.web_port),
        name="web",
    )


if __name__ == "__main__":
    main()
