"""Addresses: pod IPs, Service cluster IPs, service links, and cluster DNS on loopback.

Every pod gets its own loopback address (``127.A.B.n``; Linux routes all of ``127/8`` to
``lo``), so two pods can both listen on their container port as they would in a cluster.
Cluster DNS has no equivalent on one machine, so URLs are translated instead: wherever an
environment value (or a request of the test) names a Service, ``http://minio.facerank.svc
.cluster.local:9000`` for instance, the harness rewrites host and Service port to the pod
address and target port of the process behind it. Only names the harness registered are
rewritten; any other name is left as it is, and fails to resolve as it would in a cluster
without that Service.

Service links are computed as the kubelet computes them (``pkg/kubelet/envvars``): for each
Service of the namespace that has a cluster IP, ``<NAME>_SERVICE_HOST``,
``<NAME>_SERVICE_PORT``, ``<NAME>_SERVICE_PORT_<PORT NAME>``, ``<NAME>_PORT`` and
``<NAME>_PORT_<port>_<PROTO>[_PROTO|_PORT|_ADDR]``, with the cluster IPs the harness assigned
(nothing listens there: a program that uses them is wrong in a cluster too).
"""

from __future__ import annotations

import itertools
import random
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from facerank.ports import reserve_port, reserved_port

CLUSTER_DOMAIN = "cluster.local"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def cluster_names(name: str, namespace: str) -> tuple[str, ...]:
    """The names cluster DNS (and resolv.conf's search list, inside ``namespace``) answer."""
    return (
        name,
        f"{name}.{namespace}",
        f"{name}.{namespace}.svc",
        f"{name}.{namespace}.svc.{CLUSTER_DOMAIN}",
    )


def knative_services(name: str) -> list[dict[str, Any]]:
    """The Services Knative creates for a Knative Service ``name`` (first revision): the
    route's ExternalName (no cluster IP, so no links) and the revision's public and private
    ClusterIP Services."""
    revision = f"{name}-00001"

    def service(service_name: str, ports: list[tuple[str, int]], kind: str) -> dict[str, Any]:
        spec: dict[str, Any] = {"type": kind, "ports": [{"name": n, "port": p} for n, p in ports]}
        return {"kind": "Service", "metadata": {"name": service_name}, "spec": spec}

    return [
        service(name, [("http2", 80)], "ExternalName"),
        service(revision, [("http", 80), ("https", 443)], "ClusterIP"),
        service(
            f"{revision}-private",
            [
                ("http", 80),
                ("https", 443),
                ("http-autometric", 9090),
                ("http-usermetric", 9091),
                ("http-queueadm", 8022),
            ],
            "ClusterIP",
        ),
    ]


def has_cluster_ip(service: Mapping[str, Any]) -> bool:
    spec = service.get("spec", {})
    return spec.get("type", "ClusterIP") != "ExternalName" and spec.get("clusterIP") != "None"


def _link_name(name: str) -> str:
    return name.upper().replace("-", "_")


def service_links(
    services: Iterable[Mapping[str, Any]], cluster_ip: Mapping[str, str]
) -> dict[str, str]:
    """The variables the kubelet injects for ``services`` (``enableServiceLinks``)."""
    env: dict[str, str] = {}
    for service in services:
        if not has_cluster_ip(service):
            continue
        name = service["metadata"]["name"]
        prefix, ip = _link_name(name), cluster_ip[name]
        ports = service["spec"]["ports"]
        env[f"{prefix}_SERVICE_HOST"] = ip
        env[f"{prefix}_SERVICE_PORT"] = str(ports[0]["port"])
        for port in ports:
            if port.get("name"):
                env[f"{prefix}_SERVICE_PORT_{_link_name(port['name'])}"] = str(port["port"])
        first = ports[0]
        env[f"{prefix}_PORT"] = f"{first.get('protocol', 'TCP').lower()}://{ip}:{first['port']}"
        for port in ports:
            protocol = port.get("protocol", "TCP")
            var = f"{prefix}_PORT_{port['port']}_{protocol}"
            env[var] = f"{protocol.lower()}://{ip}:{port['port']}"
            env[f"{var}_PROTO"] = protocol.lower()
            env[f"{var}_PORT"] = str(port["port"])
            env[f"{var}_ADDR"] = ip
    return env


@dataclass
class Network:
    """Pod and cluster IPs of one deployment, and its DNS table."""

    namespace: str
    _subnet: tuple[int, int] = field(
        default_factory=lambda: (random.randrange(1, 255), random.randrange(1, 255))  # noqa: S311
    )
    _hosts: itertools.count[int] = field(default_factory=lambda: itertools.count(2))
    _cluster_hosts: itertools.count[int] = field(default_factory=lambda: itertools.count(10))
    cluster_ips: dict[str, str] = field(default_factory=dict)
    routes: dict[tuple[str, int], tuple[str, int]] = field(default_factory=dict)
    """(DNS name, Service port) -> (address, port) of the process behind it."""
    prefixes: dict[str, str] = field(default_factory=dict)
    """URL prefix -> replacement, for addresses with a path (a Broker's ingress)."""
    _reservations: list[socket.socket] = field(default_factory=list)

    def reserve_port(self) -> int:
        """A port for one of the deployment's processes, held (:mod:`facerank.ports`, on every
        interface: KServe's and TensorFlow's servers bind them all whatever they are told)
        until :meth:`release`, so no other process takes it before or between its binds."""
        self._reservations.append(reserve_port())
        return reserved_port(self._reservations[-1])

    def release(self) -> None:
        """Give back every reserved port (the deployment's processes are gone)."""
        while self._reservations:
            self._reservations.pop().close()

    def pod_ip(self) -> str:
        """A fresh loopback address for one pod, checked to be bindable."""
        a, b = self._subnet
        host = next(self._hosts)
        address = f"127.{a}.{b + host // 250}.{host % 250 + 1}"
        with socket.socket() as sock:
            sock.bind((address, 0))
        return address

    def assign_cluster_ips(self, services: Iterable[Mapping[str, Any]]) -> None:
        for service in services:
            if has_cluster_ip(service):
                n = next(self._cluster_hosts)
                self.cluster_ips[service["metadata"]["name"]] = f"10.96.{n // 250}.{n % 250 + 1}"

    def expose(self, name: str, port: int, address: str, target: int, namespace: str = "") -> None:
        """``name``'s Service port ``port`` reaches ``address:target``."""
        for host in cluster_names(name, namespace or self.namespace):
            self.routes[host, port] = (address, target)

    def alias(self, prefix: str, replacement: str) -> None:
        self.prefixes[prefix] = replacement

    def url(self, value: str) -> str:
        """``value`` with a registered cluster address replaced by its loopback one."""
        for prefix, replacement in self.prefixes.items():
            if value == prefix or value.startswith(prefix.rstrip("/") + "/"):
                return replacement.rstrip("/") + value[len(prefix.rstrip("/")) :]
        parts = urlsplit(value)
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
            return value
        port = parts.port or _DEFAULT_PORTS[parts.scheme]
        target = self.routes.get((parts.hostname, port))
        if target is None:
            return value
        return urlunsplit(parts._replace(netloc=f"{target[0]}:{target[1]}"))

    def address(self, host: str, port: int) -> tuple[str, int]:
        """Where ``host:port`` (a cluster name) is reached; KeyError if nothing is there."""
        return self.routes[host, port]
