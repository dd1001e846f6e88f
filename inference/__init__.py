"""The KServe predictor (model name ``facerank``) that ranks enrolled identities for each face
of a query photo: ``search`` (vectorised top-k), ``snapshot`` (versioned gallery snapshots kept
current by polling), ``model`` (the kserve.Model, V1 + V2), ``python -m inference`` (server)."""
