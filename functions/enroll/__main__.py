"""``python -m functions.enroll``: entry point of the enroll container and of ``facerank up``."""

from __future__ import annotations

import logging

from facerank.gallery import Gallery
from facerank.pipeline import FacePipeline
from facerank.serving import listen_host, listen_port, serve
from facerank.settings import Settings
from facerank.storage import open_store
from functions.enroll.app import create_app
from functions.enroll.handler import EnrollHandler


def main() -> None:
    settings = Settings.from_env()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s enroll %(levelname)s %(message)s"
    )
    store = open_store(settings)
    gallery = Gallery(store, settings.gallery_bucket)
    gallery.ensure()
    pipeline = FacePipeline.from_settings(settings)
    logging.getLogger(__name__).info(
        "enrolling from bucket %r with model %s", settings.faces_bucket, pipeline.model_version
    )
    handler = EnrollHandler(settings, store, gallery, pipeline)
    serve(
        create_app(handler),
        host=listen_host(),
        port=listen_port(settings.enroll_port),
        name="enroll",
    )


if __name__ == "__main__":
    main()
