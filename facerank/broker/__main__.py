"""``python -m facerank.broker``: the local broker as its own process, for ``facerank up``.

Reads the settings and the Broker and Trigger manifests of ``FACERANK_EVENTING_DIR``, starts
delivering (first what a previous run left queued), and serves the ingress with waitress on
``FACERANK_BROKER_HOST`` (loopback unless told otherwise, so a laptop does not accept events
from its network) and ``FACERANK_BROKER_PORT``. SIGTERM or SIGINT: stop accepting, let the
requests and deliveries under way finish, exit 0; whatever is still queued waits for the next
start.
"""

from __future__ import annotations

import logging
import sys

from facerank.broker.app import create_app
from facerank.broker.broker import LocalBroker
from facerank.errors import FacerankError
from facerank.serving import serve
from facerank.settings import Settings


def main() -> int:
    try:
        settings = Settings.from_env()
        logging.basicConfig(
            level=settings.log_level.upper(),
            format="%(asctime)s broker %(levelname)s %(message)s",
        )
        broker = LocalBroker.from_settings(settings)
    except FacerankError as exc:
        print(f"facerank.broker: {exc.code}: {exc}", file=sys.stderr)
        return 2
    host = settings.broker_host or settings.listen_host
    broker.start()
    try:
        serve(
            create_app(broker), host=host, port=settings.broker_port, name=f"broker {broker.name}"
        )
    except OSError as exc:
        print(
            f"facerank.broker: cannot listen on {host}:{settings.broker_port}: {exc}",
            file=sys.stderr,
        )
        return 2
    finally:
        broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
