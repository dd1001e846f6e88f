"""Runs a rendered overlay (``kubectl kustomize infra/overlays/<name>``) as processes.

Schema validation cannot tell whether a pod starts: only running its container with the
environment the cluster would give it can. This package does that on one machine, each module
with one job:

- :mod:`.image`: what the Dockerfile gives a container (``ENV``, ``WORKDIR``, ``ENTRYPOINT``
  and ``CMD`` of the target skaffold builds for the manifest's image name);
- :mod:`.network`: pod addresses, Service cluster IPs, the service links the kubelet injects,
  and the one translation the harness makes: cluster DNS names to loopback addresses;
- :mod:`.volumes`: Secrets, ConfigMaps, emptyDirs and claims as folders, mounted read-only
  where the manifest says so (a private mount namespace per pod: ``unshare``);
- :mod:`.podenv`: a container's environment, in the kubelet's order and precedence, plus what
  Knative, KServe and SinkBindings add;
- :mod:`.pods`: one pod as one process, its readiness, its exit;
- :mod:`.minio`: moto's S3 server in MinIO's place, set up by the overlay's setup Job and
  posting MinIO's webhook notifications;
- :mod:`.jobs`: the fake Kubernetes API the retrain function talks to, whose Jobs become
  worker processes;
- :mod:`.deployment`: all of it together, started in dependency order and stopped.

What is translated, and nothing else (see :mod:`.network` and :mod:`.volumes`): a path under
a volume's ``mountPath`` or an image path (``/app``, ``/tmp``, the model cache) becomes the
folder standing for it; a URL naming a cluster Service becomes the loopback address of the
process behind it; the listen address ``0.0.0.0`` becomes the pod's own loopback address;
Knative's ``PORT`` becomes a free port (every pod shares this machine's network, and KServe
binds every interface); ``KUBERNETES_SERVICE_HOST``/``_PORT`` name the fake API. Added, and
nothing else: ``TMPDIR`` (the folder standing for the pod's ``/tmp``, for code that asks for
the temporary folder instead of naming ``/tmp``), ``HOSTNAME`` (as the container runtime sets
it), and for a training Job's pods ``TF_CONFIG``: the cluster :func:`training.cluster
.cluster_from_env` derives from the pod's own environment, each worker's DNS name resolved to
a free loopback port (TensorFlow binds its cluster port on every interface, so two workers on
one machine cannot share 2222). A name the harness's cluster DNS does not know stays as it is
and fails, as it would in the cluster.

Training runs are sized for a test by one more kustomize layer (:mod:`.render`); the retrain
function's paths in the Job it creates are read back as the cluster would see them
(``/shared/...``). One process per workload: replicas are scale, not configuration.
"""
