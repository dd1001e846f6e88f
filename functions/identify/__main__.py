"""``python -m functions.identify``: the identify container's and ``facerank up``'s entry point."""

from __future__ import annotations

import logging

from facerank.serving import listen_port, serve
from facerank.settings import Settings
from facerank.storage import open_store
from functions.identify.app import create_app
from functions.identify.handler import build_handler


def main() -> None:
    settings = Settings.from_env()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s identify %(levelname)s %(message)s"
    )
    store = open_store(settings)
    store.ensure_bucket(settings.queries_bucket)
    handler = build_handler(settings, store)
    handler.models.current()  # load the model now (it embeds unknown faces), not on an event
    logging.getLogger(__name__).info(
        "identifying photos of bucket %r through the predictor at %s",
        settings.queries_bucket,
        settings.predictor_base_url,
    )
    serve(
        create_app(handler, api_token=settings.api_token),
        host=settings.listen_host,
        port=listen_port(settings.identify_port),
        name="identify",
    )


if __name__ == "__main__":
    main()
