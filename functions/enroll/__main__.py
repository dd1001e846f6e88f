"""``python -m functions.enroll``: entry point of the enroll container and of ``facerank up``."""

from __future__ import annotations

import logging

from facerank.serving import listen_port, serve
from facerank.settings import Settings
from facerank.storage import open_store
from functions.enroll.app import create_app
from functions.enroll.handler import build_handler


def main() -> None:
    settings = Settings.from_env()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s enroll %(levelname)s %(message)s"
    )
    log = logging.getLogger(__name__)
    handler = build_handler(settings, open_store(settings))
    log.info("loading the gallery and the active model")
    handler.gallery.ensure()
    pointer, _ = handler.models.current()  # load the model now, not on the first event
    log.info(
        "enrolling from bucket %r with model %s", settings.faces_bucket, pointer.active.version
    )
    serve(
        create_app(handler, api_token=settings.api_token),
        host=settings.listen_host,
        port=listen_port(settings.enroll_port),
        name="enroll",
    )


if __name__ == "__main__":
    main()
