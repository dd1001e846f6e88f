"""MinIO bucket notifications as its webhook target POSTs them.

MinIO sends one JSON document per event::

    {"EventName": "s3:ObjectCreated:Put", "Key": "faces/alice%2F1.jpg",
     "Records": [{"eventVersion": "2.0", "eventSource": "minio:s3", "eventName": ...,
                  "s3": {"bucket": {"name": "faces", ...},
                         "object": {"key": "alice%2F1.jpg", "size": 123, "eTag": "...",
                                    "contentType": "image/jpeg", "sequencer": "..."}},
                  "source": {...}}]}

The top-level ``EventName`` and ``Key`` repeat the first record, so only ``Records`` is read
(it may hold several). A body without records (empty, ``{}``) is what checking a freshly
configured target looks like, and is answered as an empty batch rather than an error.
"""

from __future__ import annotations

from functions.source.records import Batch, load_json, parse_records


def parse_minio(body: bytes) -> Batch:
    """The changes in one MinIO webhook POST; PayloadError when it is malformed."""
    if not body.strip():
        return Batch()
    records = load_json(body, "MinIO notification").get("Records")
    return Batch() if records is None else parse_records(records)
