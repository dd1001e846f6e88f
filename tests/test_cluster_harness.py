"""The cluster harness's own rules, each checked against what Kubernetes documents, so that a
passing ``tests/test_cluster_*.py`` means the cluster would behave the same."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from facerank.errors import FacerankError
from facerank.storage import S3Store
from tests.cluster.minio import MinioStandIn
from tests.cluster.network import Network, service_links
from tests.cluster.podenv import expand, kubelet_env
from tests.cluster.volumes import PodMounts, mount_volumes, unshare_prefix
from tests.plugins.infra import INFRA

SERVICE = {
    "kind": "Service",
    "metadata": {"name": "facerank-web"},
    "spec": {"ports": [{"name": "http", "port": 80}, {"name": "metrics", "port": 9090}]},
}
POD = {
    "metadata": {"name": "p", "namespace": "facerank", "labels": {}, "annotations": {}},
    "spec": {"serviceAccountName": "sa", "nodeName": "n"},
    "status": {"podIP": "127.1.2.3", "hostIP": "127.1.2.3"},
}


def test_service_links_are_named_as_the_kubelet_names_them() -> None:
    links = service_links([SERVICE], {"facerank-web": "10.96.0.12"})
    assert links["FACERANK_WEB_PORT"] == "tcp://10.96.0.12:80"
    assert links["FACERANK_WEB_SERVICE_HOST"] == "10.96.0.12"
    assert links["FACERANK_WEB_SERVICE_PORT"] == "80"
    assert links["FACERANK_WEB_SERVICE_PORT_METRICS"] == "9090"
    assert links["FACERANK_WEB_PORT_9090_TCP_ADDR"] == "10.96.0.12"
    headless = {**SERVICE, "spec": {**SERVICE["spec"], "clusterIP": "None"}}
    assert service_links([headless], {}) == {}, "headless Services get no links"


def test_explicit_env_wins_over_service_links_and_links_over_nothing() -> None:
    container = {
        "env": [
            {"name": "FACERANK_WEB_SERVICE_HOST", "value": "mine"},
            {"name": "URL", "value": "http://$(FACERANK_WEB_SERVICE_HOST):$(FACERANK_WEB_PORT)"},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        ]
    }
    links = {"FACERANK_WEB_PORT": "tcp://10.96.0.12:80", "FACERANK_WEB_SERVICE_HOST": "10.96.0.12"}
    env = kubelet_env(POD, container, [], links)
    assert env["FACERANK_WEB_SERVICE_HOST"] == "mine"
    assert env["FACERANK_WEB_PORT"] == "tcp://10.96.0.12:80"
    assert env["URL"] == "http://mine:tcp://10.96.0.12:80"
    assert env["NS"] == "facerank"
    assert expand("$$(KEEP) $(MISSING)", {}) == "$(KEEP) $(MISSING)"


def test_cluster_urls_are_translated_and_others_left_alone() -> None:
    network = Network("facerank")
    network.expose("minio", 9000, "127.9.9.9", 9000)
    network.alias("http://broker-ingress.knative-eventing.svc.cluster.local/ns/b", "http://h:1/")
    assert (
        network.url("http://minio.facerank.svc.cluster.local:9000/x") == "http://127.9.9.9:9000/x"
    )
    assert network.url("http://minio:9000") == "http://127.9.9.9:9000"
    assert network.url("http://minio.other.svc:9000") == "http://minio.other.svc:9000"
    broker = "http://broker-ingress.knative-eventing.svc.cluster.local/ns/b"
    assert network.url(broker) == "http://h:1"
    assert network.url(broker + "/x") == "http://h:1/x"


@pytest.mark.skipif(unshare_prefix() is None, reason="needs unshare (root or user namespaces)")
def test_read_only_mounts_refuse_writes_in_the_pod(tmp_path: Path) -> None:
    spec = {
        "volumes": [
            {"name": "shared", "persistentVolumeClaim": {"claimName": "c", "readOnly": False}},
            {"name": "scratch", "emptyDir": {}},
        ]
    }
    container = {
        "volumeMounts": [
            {"name": "shared", "mountPath": "/shared", "readOnly": True},
            {"name": "scratch", "mountPath": "/tmp"},
        ]
    }
    claim = {"kind": "PersistentVolumeClaim", "metadata": {"name": "c"}}
    mounts: PodMounts = mount_volumes(tmp_path / "pod", spec, container, [claim], tmp_path / "c")
    shared, scratch = mounts.path("/shared/f"), mounts.path("/tmp/f")
    script = f"echo x > {scratch} && ! (echo x > {shared}) 2>/dev/null"
    result = subprocess.run(
        [*mounts.wrapper(), "sh", "-c", script], capture_output=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "pod" / "volumes" / "scratch" / "f").exists()
    assert not (tmp_path / "c" / "c" / "f").exists()


def test_minio_stand_in_enforces_each_users_policy(free_port: Callable[[], int]) -> None:
    """A read-only user cannot write, the root user can, an unknown key cannot do anything."""
    address, port = "127.0.0.1", free_port()
    minio = MinioStandIn(address, port, lambda url: url)
    minio.root_user = "root-user"
    reader = json.loads((INFRA / "base" / "minio" / "policies" / "predictor.json").read_text())
    minio.add_user("predictor", "predictor-key", reader)
    minio.start()
    try:
        root = S3Store(minio.url, "root-user", "root-secret")
        root.ensure_bucket("gallery")
        root.put("gallery", "a", b"x")
        assert S3Store(minio.url, "predictor-key", "s").get("gallery", "a").data == b"x"
        assert minio.errors == []
        with pytest.raises(FacerankError):
            S3Store(minio.url, "predictor-key", "s").put("gallery", "b", b"y")
        with pytest.raises(FacerankError):
            S3Store(minio.url, "stranger", "s").get("gallery", "a")
        assert [e.split(":")[1].strip() for e in minio.errors] == [
            "user predictor",
            "unknown access key 'stranger'",
        ]
    finally:
        minio.stop()
