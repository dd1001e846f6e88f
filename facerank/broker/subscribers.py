"""Where each Trigger's subscriber listens on this machine.

In a cluster Knative resolves ``subscriber.ref`` (a Knative Service) to its URL. Locally there
is no API server to ask, so the names map to URLs through one setting, ``broker_subscribers``,
which ``facerank up`` sets for the broker it starts::

    FACERANK_BROKER_SUBSCRIBERS="facerank-enroll=http://127.0.0.1:8092,other=http://..."

A ``subscriber.uri`` needs no mapping. A reference without a URL stops the broker at start,
naming every missing one: discovering it at the first event would lose that event's time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from facerank.broker.manifests import TriggerSpec, is_http_url
from facerank.errors import ConfigError
from facerank.settings import env_var

SUBSCRIBERS_ENV = env_var("broker_subscribers")


def parse_subscribers(text: str) -> dict[str, str]:
    """``name=url,name=url`` as a mapping; raises :class:`ConfigError` naming a bad entry."""
    urls: dict[str, str] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        name, sep, url = (piece.strip() for piece in entry.partition("="))
        if not sep or not name or not is_http_url(url):
            raise ConfigError(f"{SUBSCRIBERS_ENV}: {entry!r} is not name=http://host:port")
        if name in urls:
            raise ConfigError(f"{SUBSCRIBERS_ENV}: {name!r} is given twice")
        urls[name] = url
    return urls


def resolve_subscribers(triggers: Iterable[TriggerSpec], urls: Mapping[str, str]) -> dict[str, str]:
    """Trigger name -> subscriber URL."""
    resolved: dict[str, str] = {}
    missing: dict[str, list[str]] = {}
    for trigger in triggers:
        target = trigger.subscriber
        if target.uri:
            resolved[trigger.name] = target.uri
        elif target.name in urls:
            resolved[trigger.name] = urls[target.name]
        else:
            missing.setdefault(target.name, []).append(trigger.name)
    if missing:
        named = ", ".join(f"{name} (trigger(s) {', '.join(t)})" for name, t in missing.items())
        raise ConfigError(
            f"no URL for subscriber(s) {named}: add name=http://host:port entries to "
            f"{SUBSCRIBERS_ENV}"
        )
    return resolved
