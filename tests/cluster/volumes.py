"""A pod's volumes as folders, and the path translation its mounts imply.

Each volume becomes a folder: a Secret's or ConfigMap's keys as files (what the kubelet
writes), an emptyDir as an empty folder of the pod, a PersistentVolumeClaim as one folder of
the deployment that every pod mounting the claim shares (the NFS volume). Each volumeMount gets
a view folder of its own, bound onto the volume's folder in the pod's private mount namespace,
read-only where the mount or the volume says so (Secret and ConfigMap volumes always are), so a
write there fails as it would in the pod. Values naming a path under a ``mountPath`` (a setting
like ``FACERANK_S3_ACCESS_KEY_FILE``) are translated to the view folder; paths of the image
itself (``/app``, ``/opt/venv``, the baked model cache) to the folders standing for them.

The private mount namespace comes from ``unshare`` (as root, or in a user namespace where the
kernel allows them). It also gives the pod its hostname (an Indexed Job's ``<job>-<index>``)
and the service-account token at the fixed path Kubernetes clients read it from
(``/var/run/secrets/kubernetes.io/serviceaccount``), on a ``/run`` of the pod's own.
"""

from __future__ import annotations

import base64
import shlex
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


@cache
def unshare_prefix() -> tuple[str, ...] | None:
    """The ``unshare`` invocation that gives a process private mount and UTS namespaces in
    which it may bind-mount; None where neither root nor user namespaces allow it."""
    for prefix in (
        ("unshare", "--mount", "--uts", "--propagation", "private"),
        ("unshare", "--user", "--map-root-user", "--mount", "--uts", "--propagation", "private"),
    ):
        probe = subprocess.run(
            [*prefix, "sh", "-c", "mount -t tmpfs tmpfs /run && hostname probe"],
            capture_output=True,
            timeout=30,
            check=False,
        )
        if probe.returncode == 0:
            return prefix
    return None


def _find(documents: Iterable[Mapping[str, Any]], kind: str, name: str) -> Mapping[str, Any]:
    for document in documents:
        if document["kind"] == kind and document["metadata"]["name"] == name:
            return document
    raise LookupError(f"the pod needs {kind}/{name}, which the overlay does not define")


def _write_keys(
    folder: Path, data: Mapping[str, bytes], items: list[dict[str, Any]] | None
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    chosen = [(i["key"], i["path"]) for i in items] if items else [(k, k) for k in data]
    for key, path in chosen:
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data[key])
        target.chmod(0o644)


def secret_data(secret: Mapping[str, Any]) -> dict[str, bytes]:
    data = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
    data.update({k: v.encode() for k, v in (secret.get("stringData") or {}).items()})
    return data


@dataclass(frozen=True)
class Mount:
    path: str
    """Where the container sees it."""
    view: Path
    """The folder standing for it (bound onto ``source`` in the pod's mount namespace)."""
    source: Path
    read_only: bool


@dataclass
class PodMounts:
    """The mounts of one container of one pod, and the translation of paths under them."""

    folder: Path
    mounts: list[Mount] = field(default_factory=list)
    image_paths: dict[str, Path] = field(default_factory=dict)
    service_account: Path | None = None
    hostname: str = ""

    def path(self, value: str) -> str:
        """``value`` translated if it is a path under a mount or an image path."""
        if not value.startswith("/"):
            return value
        candidates = [(m.path, m.view) for m in self.mounts] + list(self.image_paths.items())
        for prefix, folder in sorted(candidates, key=lambda c: -len(c[0])):
            if value == prefix:
                return str(folder)
            if value.startswith(prefix.rstrip("/") + "/"):
                return str(folder / value[len(prefix.rstrip("/")) + 1 :])
        return value

    def wrapper(self) -> list[str]:
        """The command prefix that sets up this pod's namespace, then runs the container."""
        prefix = unshare_prefix()
        if prefix is None:
            raise RuntimeError("the harness needs unshare (root, or user namespaces)")
        steps = ["set -e"]
        if self.service_account is not None:
            steps += [
                "mount -t tmpfs tmpfs /run",
                f"mkdir -p {SERVICE_ACCOUNT_DIR}",
                f"mount --bind {shlex.quote(str(self.service_account))} {SERVICE_ACCOUNT_DIR}",
                f"mount -o remount,bind,ro {SERVICE_ACCOUNT_DIR}",
            ]
        for mount in self.mounts:
            view, source = shlex.quote(str(mount.view)), shlex.quote(str(mount.source))
            steps.append(f"mount --bind {source} {view}")
            if mount.read_only:
                steps.append(f"mount -o remount,bind,ro {view}")
        if self.hostname:
            steps.append(f"hostname {shlex.quote(self.hostname)}")
        steps.append('exec "$@"')
        return [*prefix, "sh", "-c", "; ".join(steps), "pod"]


def mount_volumes(
    folder: Path,
    spec: Mapping[str, Any],
    container: Mapping[str, Any],
    documents: list[Mapping[str, Any]],
    claims: Path,
) -> PodMounts:
    """Materialise the volumes ``container`` mounts, under ``folder`` (the pod's own) and
    ``claims`` (one folder per claim, shared by the deployment)."""
    mounts = PodMounts(folder)
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for index, volume_mount in enumerate(container.get("volumeMounts", [])):
        volume = volumes[volume_mount["name"]]
        source = folder / "volumes" / volume["name"]
        read_only = bool(volume_mount.get("readOnly"))
        if "secret" in volume:
            secret = _find(documents, "Secret", volume["secret"]["secretName"])
            _write_keys(source, secret_data(secret), volume["secret"].get("items"))
            read_only = True
        elif "configMap" in volume:
            config_map = _find(documents, "ConfigMap", volume["configMap"]["name"])
            data = {k: v.encode() for k, v in (config_map.get("data") or {}).items()}
            _write_keys(source, data, volume["configMap"].get("items"))
            read_only = True
        elif "emptyDir" in volume:
            source.mkdir(parents=True, exist_ok=True)
            source.chmod(0o1777)
        elif "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]
            _find(documents, "PersistentVolumeClaim", claim["claimName"])
            source = claims / claim["claimName"]
            source.mkdir(parents=True, exist_ok=True)
            read_only = read_only or bool(claim.get("readOnly"))
        else:
            raise NotImplementedError(f"volume {volume['name']}: kind not supported")
        if volume_mount.get("subPath"):
            source = source / volume_mount["subPath"]
        view = folder / "mounts" / f"{index}-{PurePosixPath(volume_mount['mountPath']).name}"
        view.mkdir(parents=True)
        mounts.mounts.append(Mount(volume_mount["mountPath"], view, source, read_only))
    return mounts
