"""Which worker this process is, and who its peers are: ``TF_CONFIG``, given or derived.

MultiWorkerMirroredStrategy reads the cluster from ``TF_CONFIG``. The local launcher sets it;
in Kubernetes nobody does, so it is derived from what an Indexed Job with a headless Service
gives every pod: ``JOB_COMPLETION_INDEX`` (set by Kubernetes), and ``FACERANK_TRAIN_WORKERS``,
``FACERANK_TRAIN_JOB``, ``FACERANK_TRAIN_SERVICE``, ``FACERANK_TRAIN_NAMESPACE``,
``FACERANK_TRAIN_PORT`` (set by the retrain function in the Job's pod template): worker ``i``
is ``<job>-<i>.<service>.<namespace>.svc:<port>``, the DNS name the pod's hostname and
subdomain give it, fully qualified so that it resolves whatever the pod's resolv.conf search
domains are (``dnsPolicy``, a custom ``dnsConfig``, ndots).

Worker 0 is the chief (MWMS' convention when the cluster has no ``chief`` job): it alone
writes the real checkpoints, the progress, the export and the result.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from training.errors import ClusterConfigError

DEFAULT_PORT = 2222
_DERIVED = (
    "JOB_COMPLETION_INDEX",
    "FACERANK_TRAIN_WORKERS",
    "FACERANK_TRAIN_JOB",
    "FACERANK_TRAIN_SERVICE",
    "FACERANK_TRAIN_NAMESPACE",
)


@dataclass(frozen=True)
class Cluster:
    """The workers of a run (``host:port`` each) and this process's index among them."""

    workers: tuple[str, ...]
    index: int

    def __post_init__(self) -> None:
        if not self.workers:
            raise ClusterConfigError("a cluster needs at least one worker")
        if not 0 <= self.index < len(self.workers):
            raise ClusterConfigError(f"task index {self.index} outside {len(self.workers)} workers")

    @property
    def is_chief(self) -> bool:
        return self.index == 0

    @property
    def size(self) -> int:
        return len(self.workers)

    def tf_config(self) -> str:
        """The ``TF_CONFIG`` value describing this cluster and task."""
        return json.dumps(
            {
                "cluster": {"worker": list(self.workers)},
                "task": {"type": "worker", "index": self.index},
            }
        )


def cluster_from_env(env: Mapping[str, str]) -> Cluster | None:
    """The cluster ``env`` describes; None for a single worker that needs no ``TF_CONFIG``.

    ``TF_CONFIG`` wins when set. Else the ``FACERANK_TRAIN_*`` variables are used, all of them
    or none: a partial set is a broken pod template and raises :class:`ClusterConfigError`.
    """
    if env.get("TF_CONFIG"):
        return _parse_tf_config(env["TF_CONFIG"])
    present = [name for name in _DERIVED if env.get(name)]
    if not present:
        return None
    missing = [name for name in _DERIVED if name not in present]
    if missing:
        raise ClusterConfigError(
            f"TF_CONFIG is not set and {', '.join(missing)} missing: set all of "
            f"{', '.join(_DERIVED)} (and optionally FACERANK_TRAIN_PORT)"
        )
    index = _integer(env, "JOB_COMPLETION_INDEX")
    count = _integer(env, "FACERANK_TRAIN_WORKERS")
    port = _integer(env, "FACERANK_TRAIN_PORT") if env.get("FACERANK_TRAIN_PORT") else DEFAULT_PORT
    job, service = env["FACERANK_TRAIN_JOB"], env["FACERANK_TRAIN_SERVICE"]
    domain = f"{service}.{env['FACERANK_TRAIN_NAMESPACE']}.svc"
    return Cluster(tuple(f"{job}-{i}.{domain}:{port}" for i in range(count)), index)


def _parse_tf_config(raw: str) -> Cluster:
    try:
        data = json.loads(raw)
        workers = data["cluster"]["worker"]
        task = data["task"]
    except (ValueError, KeyError, TypeError):
        raise ClusterConfigError(
            'TF_CONFIG must be JSON like {"cluster": {"worker": [...]}, "task": {...}}'
        ) from None
    extra = set(data["cluster"]) - {"worker"}
    if extra:
        raise ClusterConfigError(
            f"TF_CONFIG: only 'worker' tasks are supported (worker 0 is the chief), not {extra}"
        )
    if task.get("type") != "worker" or not isinstance(task.get("index"), int):
        raise ClusterConfigError("TF_CONFIG task must be {'type': 'worker', 'index': <int>}")
    if not isinstance(workers, list) or not all(isinstance(w, str) for w in workers):
        raise ClusterConfigError("TF_CONFIG cluster.worker must be a list of host:port strings")
    return Cluster(tuple(workers), task["index"])


def _integer(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except ValueError:
        raise ClusterConfigError(f"{name} must be an integer, not {env[name]!r}") from None
