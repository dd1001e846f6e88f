"""The bucket event source: object-store notifications in, CloudEvents out.

Four feeds, all on at once, all through one :class:`~functions.source.emitter.Emitter`:
MinIO's webhook (``POST /minio``), S3 notifications via SNS (``POST /sns``), the folder
watcher (folder store only), and a periodic reconcile pass that finds what the others missed.
Run it with ``python -m functions.source``; events go to the URL in ``K_SINK``.
"""
