"""``python -m functions.deadletter``: entry point of the dead-letter sink's container.

Port from ``PORT`` (Knative injects it), else 8093, beside the other functions' local ports.
"""

from __future__ import annotations

import logging

from facerank.serving import listen_port, serve
from facerank.settings import Settings
from facerank.storage import open_store
from functions.deadletter.app import BUCKET, create_app

DEFAULT_PORT = 8093


def main() -> None:
    settings = Settings.from_env()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s dead-letter %(levelname)s %(message)s"
    )
    store = open_store(settings)
    store.ensure_bucket(BUCKET)
    serve(
        create_app(store, api_token=settings.api_token),
        host=settings.listen_host,
        port=listen_port(DEFAULT_PORT),
        name="dead-letter",
    )


if __name__ == "__main__":
    main()
