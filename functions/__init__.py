"""Knative functions (Flask apps speaking CloudEvents): the bucket event source, enroll and
retrain. Each runs as ``python -m functions.<name>``, in its container and under
``facerank up`` alike. Built by the enrollment issue; empty until then."""
