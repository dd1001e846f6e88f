"""``python -m functions.notify``: the notify container's and ``facerank up``'s entry point."""

from __future__ import annotations

import logging

from facerank.serving import listen_port, serve
from facerank.settings import Settings
from facerank.storage import open_store
from functions.notify.app import create_app
from functions.notify.handler import build_handler


def main() -> None:
    settings = Settings.from_env()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s notify %(levelname)s %(message)s"
    )
    store = open_store(settings)
    store.ensure_bucket(settings.gallery_bucket)  # where notified events are marked
    handler = build_handler(settings, store)
    logging.getLogger(__name__).info(
        "notifying on %r: %s",
        settings.notify_filter,
        "webhook configured" if handler.webhook_url else "no webhook configured (off)",
    )
    serve(
        create_app(handler, api_token=settings.api_token),
        host=settings.listen_host,
        port=listen_port(settings.notify_port),
        name="notify",
    )


if __name__ == "__main__":
    main()
