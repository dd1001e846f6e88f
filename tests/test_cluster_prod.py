"""The prod overlay, run end to end on this machine (see ``tests/cluster``)."""

from tests.cluster.suite import (  # noqa: F401 - collected here
    deployment_fixture,
    enrolled,
    healthy,
    test_every_workload_starts_and_stays_up,
    test_query_curl_and_web_rank_the_person_first,
    test_retrain_runs_the_job_to_a_decision,
    test_uploaded_photos_are_enrolled_through_the_webhook,
)

deployment = deployment_fixture("prod")
