"""The cluster manifests, rendered offline: they parse, validate strictly, and hang together.

Core kinds are validated against the Kubernetes OpenAPI schemas (``kubernetes-validate``,
strict: an unknown field is an error), custom resources against their CRD schemas from
``tests/schemas`` closed the same way. Then the references between objects are followed:
a typo in a Secret name or a Trigger subscriber validates fine and breaks only in a cluster.
"""

from __future__ import annotations

import re
from dataclasses import fields
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
from jsonschema import Draft7Validator

from facerank.broker import load_eventing
from facerank.broker.manifests import parse_duration
from facerank.settings import Settings
from functions.deadletter.app import BUCKET as DEAD_LETTER_BUCKET
from functions.retrain.kubernetes import TRAIN_PORT
from tests.plugins.infra import (
    OVERLAYS,
    ROOT,
    Document,
    collectable,
    env_of,
    find,
    get,
    group_of,
    identify,
    is_custom,
    kustomize,
    matches,
    names,
    needs_kubectl,
    pods,
    prepare_copy,
    rendered,
    with_value,
)
from tests.plugins.schemas import custom_resource_schema, schema_path

pytestmark = needs_kubectl

KUBERNETES_VERSIONS = ("1.31", kubernetes_validate.latest_version())
"""The oldest Kubernetes the README's deploy section supports, and the newest known."""

KNATIVE = "serving.knative.dev"
KSERVE = "serving.kserve.io"


GENERATED_SUFFIX = re.compile(r"-[bcdfghkmt2-9]{10}$")
"""The content hash kustomize appends to a generated Secret's or ConfigMap's name (its encoding
maps hex digits onto this alphabet): prod's secrets are random, so it differs per render."""


def document_id(item: tuple[str, Document]) -> str:
    """The test id of one rendered document, the same in every render: pytest-xdist's workers
    each render the overlays and must collect the same ids in the same order."""
    overlay, document = item
    name = identify(document)
    if document["kind"] in ("Secret", "ConfigMap"):
        name = GENERATED_SUFFIX.sub("", name)
    return f"{overlay}:{name}"


def all_documents() -> list[tuple[str, Document]]:
    """Every rendered document with its overlay, in the order of their ids (see above)."""
    items = [(overlay, document) for overlay in OVERLAYS for document in collectable(overlay)]
    return sorted(items, key=document_id)


# --- rendering and schemas ------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_unique_named_objects(overlay: str) -> None:
    documents = rendered(overlay)
    keys = [
        (group_of(d), d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"])
        for d in documents
    ]
    assert len(keys) == len(set(keys))
    namespaced = [d for d in documents if d["kind"] not in ("Namespace", "StorageClass")]
    assert {d["metadata"].get("namespace") for d in namespaced} == {"facerank"}


def test_an_overlay_without_its_secret_files_does_not_render(tmp_path: Any) -> None:
    """The secrets come only from the git-ignored files: none, no render (and no default)."""
    copy = prepare_copy(tmp_path)
    (copy / "overlays" / "prod" / "secrets" / "minio.env").unlink()
    result = kustomize(copy / "overlays" / "prod")
    assert result.returncode != 0
    assert "minio.env" in result.stderr


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(
    "item", [i for i in all_documents() if not is_custom(i[1])], ids=document_id
)
def test_core_kinds_validate_strictly(item: tuple[str, Document], version: str) -> None:
    kubernetes_validate.validate(item[1], version, strict=True)


def crd_problems(document: Document) -> list[str]:
    validator = Draft7Validator(custom_resource_schema(document["apiVersion"], document["kind"]))
    return [
        f"{'.'.join(map(str, error.absolute_path)) or '(root)'}: {error.message[:300]}"
        for error in validator.iter_errors(document)
    ]


@pytest.mark.parametrize("item", [i for i in all_documents() if is_custom(i[1])], ids=document_id)
def test_custom_resources_validate_strictly(item: tuple[str, Document]) -> None:
    document = item[1]
    assert schema_path(document["apiVersion"], document["kind"]).is_file()
    assert crd_problems(document) == []


@pytest.mark.parametrize(
    ("path", "value", "problem"),
    [
        ("spec.predictor.containers.0.imagePullPolcy", "Never", "'imagePullPolcy' was unexpected"),
        ("spec.predictor.minReplicas", "1", "'1' is not of type 'integer'"),
        ("spec.predictr", {}, "'predictr' was unexpected"),
    ],
)
def test_the_crd_check_rejects_typos(path: str, value: Any, problem: str) -> None:
    document = with_value(get(rendered("dev"), "InferenceService", "facerank"), path, value)
    assert any(problem in found for found in crd_problems(document)), crd_problems(document)


def test_knative_services_carry_no_selector() -> None:
    """The commonLabels trap: kustomize would write spec.selector into Knative Services."""
    for _, document in all_documents():
        if document["kind"] == "Service" and group_of(document) == KNATIVE:
            assert "selector" not in document["spec"], identify(document)


# --- references between objects ---------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_eventing_references_resolve(overlay: str) -> None:
    documents = rendered(overlay)
    services = names(documents, "Service", KNATIVE)
    brokers = names(documents, "Broker")
    assert brokers == {"facerank"}
    for trigger in (d for d in documents if d["kind"] == "Trigger"):
        assert trigger["spec"]["broker"] in brokers
        assert trigger["spec"]["subscriber"]["ref"]["name"] in services, identify(trigger)
    broker = get(documents, "Broker", "facerank")
    assert broker["spec"]["delivery"]["deadLetterSink"]["ref"]["name"] in services
    bindings = [d for d in documents if d["kind"] == "SinkBinding"]
    assert {b["spec"]["subject"]["name"] for b in bindings} == {
        "facerank-source",
        "facerank-retrain",
    }
    for binding in bindings:
        assert binding["spec"]["subject"]["name"] in services
        assert binding["spec"]["sink"]["ref"] == {
            "apiVersion": "eventing.knative.dev/v1",
            "kind": "Broker",
            "name": "facerank",
        }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_broker_waits_as_long_as_its_subscribers_may_take(overlay: str) -> None:
    """A delivery attempt abandoned before the subscriber's own request timeout is retried
    while the first is still being handled: duplicate work, and a slow success counted as a
    failure (dead-lettered after the retries)."""
    documents = rendered(overlay)
    timeout = parse_duration(get(documents, "Broker", "facerank")["spec"]["delivery"]["timeout"])
    for trigger in (d for d in documents if d["kind"] == "Trigger"):
        name = trigger["spec"]["subscriber"]["ref"]["name"]
        service = get(documents, "Service", name, "serving.knative.dev")
        allowed = service["spec"]["template"]["spec"].get("timeoutSeconds", 300)
        assert timeout > allowed, f"{name} may take {allowed} s; the Broker waits {timeout} s"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pod_references_resolve(overlay: str) -> None:
    documents = rendered(overlay)
    secrets = {d["metadata"]["name"]: d.get("data", {}) for d in documents if d["kind"] == "Secret"}
    config_maps = names(documents, "ConfigMap")
    claims = names(documents, "PersistentVolumeClaim")
    accounts = names(documents, "ServiceAccount")
    for pod in pods(documents):
        assert pod.spec.get("serviceAccountName") in accounts, pod.where
        volumes = {v["name"]: v for v in pod.spec.get("volumes", [])}
        for volume in volumes.values():
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets, pod.where
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, pod.where
        for container in pod.containers:
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes, f"{pod.where}: {mount['name']}"
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] in config_maps, pod.where
            for variable in container.get("env", []):
                ref = variable.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secrets.get(ref["name"], {}), f"{pod.where}: {ref}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_outside_knative_get_no_service_links(overlay: str) -> None:
    """The kubelet would inject ``<SERVICE>_PORT=tcp://...`` for every Service of the
    namespace, and ``facerank-web`` becomes ``FACERANK_WEB_PORT``, a setting Settings then
    refuses. Knative's and KServe's pods get none by default; every other pod must say so."""
    for pod in pods(rendered(overlay)):
        if pod.where.startswith(("Service/", "InferenceService/")):
            continue
        assert pod.spec.get("enableServiceLinks") is False, pod.where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grpc_reaches_the_predictor_on_its_settings_port(overlay: str) -> None:
    """Knative routes one port (REST); gRPC is served beside it on the settings' port, which the
    direct Service and the NetworkPolicy that admits gRPC clients must both name."""
    documents = rendered(overlay)
    port = Settings().predictor_grpc_port
    isvc = get(documents, "InferenceService", "facerank")
    (container,) = isvc["spec"]["predictor"]["containers"]
    assert env_of(container, documents).get("FACERANK_PREDICTOR_GRPC_PORT", str(port)) == str(port)
    direct = get(documents, "Service", "facerank-predictor-direct", "")
    (grpc,) = [p for p in direct["spec"]["ports"] if p["name"] == "grpc"]
    assert (grpc["targetPort"], grpc["appProtocol"]) == (port, "kubernetes.io/h2c")
    policy = get(documents, "NetworkPolicy", "predictor-grpc-from-labelled-clients")
    assert matches(policy["spec"]["podSelector"], {"app.kubernetes.io/component": "predictor"})
    [rule] = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": port}]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_claims_name_existing_storage_classes(overlay: str) -> None:
    documents = rendered(overlay)
    classes = names(documents, "StorageClass")
    for claim in (d for d in documents if d["kind"] == "PersistentVolumeClaim"):
        wanted = claim["spec"].get("storageClassName")
        assert wanted is None or wanted in classes, identify(claim)
    shared = get(documents, "PersistentVolumeClaim", "facerank-shared")
    assert shared["spec"]["accessModes"] == ["ReadWriteMany"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rbac_references_resolve(overlay: str) -> None:
    documents = rendered(overlay)
    for binding in (d for d in documents if d["kind"] == "RoleBinding"):
        get(documents, "Role", binding["roleRef"]["name"])
        for subject in binding["subjects"]:
            assert subject["kind"] == "ServiceAccount"
            assert subject["namespace"] == binding["metadata"]["namespace"]
            assert subject["name"] in names(documents, "ServiceAccount")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_selectors_select_pods(overlay: str) -> None:
    """Services and NetworkPolicies select existing pods; every listed component exists.
    (Peers with a namespace selector name pods of other namespaces too, such as the
    predictor's gRPC clients: those cannot be checked against the overlay.)"""
    documents = rendered(overlay)
    labels = [dict(pod.labels) for pod in pods(documents)]
    components = {pod.get("app.kubernetes.io/component") for pod in labels}
    for service in (d for d in documents if d["kind"] == "Service" and group_of(d) == ""):
        if "selector" in service["spec"] and service["spec"].get("clusterIP") != "None":
            assert any(matches(service["spec"]["selector"], pod) for pod in labels), service
    for policy in (d for d in documents if d["kind"] == "NetworkPolicy"):
        selectors = [policy["spec"]["podSelector"]] + [
            peer["podSelector"]
            for rule in policy["spec"].get("ingress", [])
            for peer in rule.get("from", [])
            if "podSelector" in peer and "namespaceSelector" not in peer
        ]
        for selector in selectors:
            assert any(matches(selector, pod) for pod in labels), identify(policy)
            for expression in selector.get("matchExpressions", []):
                if expression["key"] == "app.kubernetes.io/component":
                    assert set(expression["values"]) <= components, expression


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_minio_client_may_reach_minio(overlay: str) -> None:
    """Whoever holds the MinIO credentials is let through MinIO's NetworkPolicy."""
    documents = rendered(overlay)
    policy = get(documents, "NetworkPolicy", "minio-from-facerank")
    (rule,) = policy["spec"]["ingress"]
    (peer,) = rule["from"]
    for pod in pods(documents):
        secrets = {v["secret"]["secretName"] for v in pod.spec.get("volumes", []) if "secret" in v}
        if any(name.startswith("minio-credentials") for name in secrets):
            assert matches(peer["podSelector"], dict(pod.labels)), pod.where


def url_targets(documents: tuple[Document, ...]) -> dict[str, set[str]]:
    """Host names an in-cluster URL may use, per namespace: Services, Knative Services and
    the InferenceService predictor (KServe names it ``<isvc>-predictor``)."""
    targets: dict[str, set[str]] = {}
    for document in documents:
        namespace = document["metadata"].get("namespace", "")
        name = document["metadata"]["name"]
        if document["kind"] == "Service":
            targets.setdefault(namespace, set()).add(name)
        elif document["kind"] == "InferenceService":
            targets.setdefault(namespace, set()).add(f"{name}-predictor")
    return targets


SERVICE_HOST = re.compile(
    r"(?P<name>[a-z0-9-]+)\.(?P<namespace>[a-z0-9-]+)\.svc(\.cluster\.local)?"
)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_in_cluster_urls_name_existing_services(overlay: str) -> None:
    """Every ``http://<name>.<namespace>.svc...`` in an environment names a rendered Service."""
    documents = rendered(overlay)
    targets = url_targets(documents)
    found = 0
    for pod in pods(documents):
        for container in pod.containers:
            for value in env_of(container, documents).values():
                host = urlsplit(value).hostname if value.startswith("http") else None
                match = SERVICE_HOST.fullmatch(host or "")
                if match:
                    found += 1
                    assert match["name"] in targets.get(match["namespace"], set()), value
    assert found >= 4, "the S3 endpoint, the webhook, the predictor URL, the setup Job"


def test_settings_in_the_config_map_are_facerank_settings() -> None:
    """A misspelt FACERANK_* variable is silently ignored by Settings: catch it here."""
    known = {f"FACERANK_{f.name.upper()}" for f in fields(Settings)}
    for overlay in OVERLAYS:
        configs = [d for d in rendered(overlay) if d["kind"] == "ConfigMap"]
        data = {
            k: v
            for d in configs
            if d["metadata"]["name"].startswith(("facerank-env-", "facerank-s3-"))
            for k, v in d["data"].items()
        }
        assert "FACERANK_S3_ACCESS_KEY_FILE" in data
        for variable in data:
            assert variable.removesuffix("_FILE") in known, variable
        settings = {k: v for k, v in data.items() if not k.endswith("_FILE")}
        assert Settings.from_env(settings).store == "s3"


def test_minio_announces_object_changes_to_the_source() -> None:
    documents = rendered("dev")
    minio = get(documents, "Deployment", "minio")
    setup = get(documents, "Job", "minio-setup")
    env = {v["name"]: v for v in minio["spec"]["template"]["spec"]["containers"][0]["env"]}
    endpoint = urlsplit(env["MINIO_NOTIFY_WEBHOOK_ENDPOINT_FACERANK"]["value"])
    assert endpoint.hostname == "facerank-source.facerank.svc.cluster.local"
    assert endpoint.path == "/minio"
    assert env["MINIO_NOTIFY_WEBHOOK_QUEUE_DIR_FACERANK"]["value"].startswith("/data/")
    token = env["MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN_FACERANK"]["valueFrom"]["secretKeyRef"]
    source = get(documents, "Service", "facerank-source", KNATIVE)
    (container,) = source["spec"]["template"]["spec"]["containers"]
    token_file = env_of(container, documents)["FACERANK_WEBHOOK_TOKEN_FILE"]
    volumes = {v["name"]: v for v in source["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    folder, _, key = token_file.rpartition("/")
    assert mounts[folder]["secret"]["secretName"] == token["name"]
    assert key == token["key"], "MinIO and the source must share one token"
    setup_env = env_of(setup["spec"]["template"]["spec"]["containers"][0], documents)
    assert setup_env["WEBHOOK_ARN"] == "arn:minio:sqs::FACERANK:webhook"
    defaults = Settings()
    wanted = {
        defaults.faces_bucket,
        defaults.queries_bucket,
        defaults.gallery_bucket,
        defaults.models_bucket,
    }
    assert set(setup_env["BUCKETS"].split()) == wanted | {DEAD_LETTER_BUCKET}


def test_the_trainer_template_is_what_the_retrain_function_reads() -> None:
    documents = rendered("dev")
    retrain = get(documents, "Service", "facerank-retrain", KNATIVE)
    role = get(documents, "Role", "facerank-retrain")
    (container,) = retrain["spec"]["template"]["spec"]["containers"]
    env = {v["name"]: v for v in container["env"]}
    template = env["FACERANK_TRAINING_TEMPLATE"]["value"]
    assert env["FACERANK_TRAINING_BACKEND"]["value"] == "kubernetes"
    assert env["FACERANK_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    (podtemplates,) = (r for r in role["rules"] if r["resources"] == ["podtemplates"])
    assert podtemplates["resourceNames"] == [template]
    trainer = get(documents, "PodTemplate", template)
    (worker,) = trainer["template"]["spec"]["containers"]
    assert env_of(worker, documents)["FACERANK_TRAIN_PORT"] == str(TRAIN_PORT)
    assert [p["containerPort"] for p in worker["ports"]] == [TRAIN_PORT]


def mounts_of(pod_spec: dict[str, Any], container: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """mountPath -> (claim name or volume kind, read-only)."""
    volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
    result = {}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        claim = volume.get("persistentVolumeClaim", {}).get("claimName")
        kind = claim or next(k for k in volume if k != "name")
        result[mount["mountPath"]] = (kind, bool(mount.get("readOnly")))
    return result


SHARED_ACCESS = {
    "Service/facerank-enroll": True,
    "Service/facerank-identify": True,
    "InferenceService/facerank": True,
    "Service/facerank-retrain": False,
    "PodTemplate/facerank-trainer": False,
}
"""Who mounts the shared volume, and read-only or not (the contract of the components)."""


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_shared_volume_and_tmp_are_mounted_as_agreed(overlay: str) -> None:
    documents = rendered(overlay)
    seen = {}
    for pod in pods(documents):
        for container in pod.containers:
            if not str(container["image"]).startswith("facerank-"):
                continue
            mounts = mounts_of(dict(pod.spec), dict(container))
            assert mounts.get("/tmp", ("", False))[0] == "emptyDir", f"{pod.where}: no /tmp"
            if "/shared" in mounts:
                claim, read_only = mounts["/shared"]
                assert claim == "facerank-shared"
                seen[pod.where] = read_only
                env = env_of(container, documents)
                assert env["FACERANK_SHARED_DIR"] == "/shared"
    assert seen == SHARED_ACCESS


def test_predictor_is_always_up_and_ready_on_its_model() -> None:
    for overlay in OVERLAYS:
        isvc = get(rendered(overlay), "InferenceService", "facerank")
        predictor = isvc["spec"]["predictor"]
        assert predictor["minReplicas"] >= 1
        (container,) = predictor["containers"]
        assert container["readinessProbe"]["httpGet"]["path"] == "/v1/models/facerank"
        assert [p["containerPort"] for p in container["ports"]] == [8080]


def test_prod_scales_out_beyond_dev() -> None:
    def predictor(overlay: str) -> dict[str, Any]:
        isvc = get(rendered(overlay), "InferenceService", "facerank")
        return isvc["spec"]["predictor"]

    def replicas(overlay: str) -> int:
        web = get(rendered(overlay), "Deployment", "facerank-web")
        return int(web["spec"]["replicas"])

    assert predictor("prod")["minReplicas"] > predictor("dev")["minReplicas"]
    assert predictor("prod")["maxReplicas"] > predictor("dev")["maxReplicas"]
    assert replicas("prod") > replicas("dev")
    get(rendered("dev"), "Deployment", "nfs-server")
    assert find(rendered("prod"), "Deployment", "nfs-server") is None
    (prod_class,) = (d for d in rendered("prod") if d["kind"] == "StorageClass")
    assert not prod_class["parameters"]["server"].endswith(".svc.cluster.local")


def test_the_cluster_routes_events_as_the_local_broker_does() -> None:
    """One source of truth: the rendered Triggers are those infra/base/eventing defines."""
    local = {t.name: t for t in load_eventing(ROOT / "infra" / "base" / "eventing").triggers}
    for overlay in OVERLAYS:
        triggers = {d["metadata"]["name"]: d for d in rendered(overlay) if d["kind"] == "Trigger"}
        assert set(triggers) == set(local)
        for name, trigger in local.items():
            spec = triggers[name]["spec"]
            assert spec["filter"]["attributes"] == dict(trigger.filter)
            assert spec["subscriber"]["ref"]["name"] == trigger.subscriber.name
