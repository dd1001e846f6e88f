"""The KServe predictor (model name ``facerank``) that ranks enrolled identities for a query
face. Built by the serving issue; empty until then."""
