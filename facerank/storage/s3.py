"""Object store on S3 (MinIO on Kubernetes, or any S3-compatible service) via ``minio``.

The wrapper exists to give S3 exactly the folder store's behaviour: the same name rules, the
same typed errors instead of ``S3Error`` codes, and failures that say whether retrying helps.
It also bounds how long a dead endpoint can stall a caller: minio's default HTTP client waits
five minutes per attempt and retries five times, which would hold an event handler far past
any broker timeout.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import urllib3
from minio import Minio
from minio.error import InvalidResponseError, S3Error, ServerError
from minio.helpers import MAX_PART_SIZE

from facerank.errors import (
    ConfigError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StoreError,
    StoreUnavailableError,
)
from facerank.storage.base import ObjectInfo, StoredObject, bucket_not_found, object_not_found
from facerank.storage.keys import (
    DEFAULT_CONTENT_TYPE,
    check_bucket,
    check_key,
    check_prefix,
    check_put,
    is_valid_key,
    shown,
)

_META_PREFIX = "x-amz-meta-"
_CONNECT_TIMEOUT_S = 3.0
_READ_TIMEOUT_S = 30.0
_RETRIES = 2
_RETRY_STATUSES = (500, 502, 503, 504)
_TRANSIENT_CODES = frozenset({"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout"})
_PRECONDITION_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})


class S3Store:
    """:class:`~facerank.storage.base.ObjectStore` on an S3 endpoint such as MinIO."""

    def __init__(
        self, endpoint: str, access_key: str, secret_key: str, region: str = "us-east-1"
    ) -> None:
        secure, host = _parse_endpoint(endpoint)
        if bool(access_key) != bool(secret_key):
            raise ConfigError("S3 access key and secret key must be set together (or neither)")
        self._endpoint = f"{'https' if secure else 'http'}://{host}"
        self._client = Minio(
            host,
            access_key=access_key or None,  # empty: anonymous access, e.g. a public bucket
            secret_key=secret_key or None,
            secure=secure,
            region=region,  # known region: minio need not ask the server for each bucket's
            http_client=_http_client(),
        )

    def __repr__(self) -> str:
        return f"S3Store({self._endpoint!r})"

    @property
    def description(self) -> str:
        return f"s3:{self._endpoint}"

    def ensure_bucket(self, bucket: str) -> None:
        check_bucket(bucket)
        with self._errors(bucket):
            if self._client.bucket_exists(bucket):
                return
            try:
                self._client.make_bucket(bucket)
            except S3Error as exc:
                if exc.code != "BucketAlreadyOwnedByYou":  # another process created it first
                    raise

    def put(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: Mapping[str, str] | None = None,
        if_match: str | None = None,
        if_none_match: bool = False,
        durable: bool = True,  # every S3 write is durable: nothing to skip
    ) -> ObjectInfo:
        clean_metadata = check_put(bucket, key, content_type, metadata)
        if len(data) > MAX_PART_SIZE:
            raise StoreError(
                f"{shown(key)}: objects above 5 GiB need multipart, which facerank never uses"
            )
        headers = {"Content-Type": content_type}
        headers.update({_META_PREFIX + name: value for name, value in clean_metadata.items()})
        if if_match is not None:
            headers["If-Match"] = f'"{if_match}"'
        if if_none_match:
            headers["If-None-Match"] = "*"
        with _absent_is_changed(if_match is not None), self._errors(bucket, key):
            # One PutObject request with exactly these headers: single-part keeps the ETag an
            # MD5, and minio's public put_object can send neither If-Match nor If-None-Match
            # (it files unknown names under x-amz-meta-).
            result = self._client._put_object(bucket, key, data, headers)
        return ObjectInfo(
            bucket=bucket,
            key=key,
            size=len(data),
            etag=result.etag,
            last_modified=_written_at(_lowered(result.http_headers)),
            content_type=content_type,
            metadata=clean_metadata,
        )

    def get(self, bucket: str, key: str) -> StoredObject:
        check_bucket(bucket)
        check_key(key)
        with self._errors(bucket, key):
            response = self._client.get_object(bucket, key)
            try:
                data = response.read(decode_content=False)  # stored bytes, even if gzipped
            finally:
                response.close()
                response.release_conn()
        return StoredObject(_info_from_headers(bucket, key, response.headers), data)

    def stat(self, bucket: str, key: str) -> ObjectInfo:
        check_bucket(bucket)
        check_key(key)
        with self._errors(bucket, key):
            try:
                headers = self._client.stat_object(bucket, key).metadata
            except S3Error as exc:
                # A HEAD response has no body, so minio cannot tell a missing bucket from a
                # missing key and reports NoSuchKey for both: ask about the bucket.
                if exc.code == "NoSuchKey" and not self._client.bucket_exists(bucket):
                    raise bucket_not_found(bucket) from None
                raise
        return _info_from_headers(bucket, key, headers or {})

    def exists(self, bucket: str, key: str) -> bool:
        try:
            self.stat(bucket, key)
        except ObjectNotFoundError:
            return False
        return True

    def list(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]:
        check_bucket(bucket)
        check_prefix(prefix)
        return self._list(bucket, prefix)

    def delete(self, bucket: str, key: str, *, if_match: str | None = None) -> None:
        check_bucket(bucket)
        check_key(key)
        if if_match is None:
            with self._errors(bucket, key):
                self._client.remove_object(bucket, key)
            return
        with _absent_is_changed(conditional=True), self._errors(bucket, key):
            # minio's remove_object sends no conditions: one DeleteObject with If-Match.
            self._client._execute("DELETE", bucket, key, headers={"If-Match": f'"{if_match}"'})

    def _list(self, bucket: str, prefix: str) -> Iterator[ObjectInfo]:
        """List lazily, page by page, skipping keys that break our rules.

        Other tools may write such keys (``a//b``, folder markers ending in ``/``); the folder
        store skips files with such names too, so both backends list the same objects.
        """
        with self._errors(bucket):
            for obj in self._client.list_objects(bucket, prefix=prefix or None, recursive=True):
                if is_valid_key(obj.object_name):
                    yield ObjectInfo(
                        bucket=bucket,
                        key=obj.object_name,
                        size=obj.size,
                        etag=obj.etag,
                        last_modified=obj.last_modified,
                        content_type="",
                        metadata=None,
                    )

    @contextmanager
    def _errors(self, bucket: str, key: str | None = None) -> Iterator[None]:
        """Translate minio and urllib3 failures into the store's typed errors."""
        where = f"bucket {shown(bucket)}" + ("" if key is None else f", key {shown(key)}")
        try:
            yield
        except S3Error as exc:
            raise _from_s3_error(exc, bucket, key, where) from exc
        except (ServerError, InvalidResponseError) as exc:
            # 5xx without an S3 error body, or a non-S3 answer such as a proxy's error page
            # while MinIO restarts.
            raise StoreUnavailableError(
                f"S3 at {self._endpoint} failed on {where}: {type(exc).__name__}"
            ) from exc
        except urllib3.exceptions.HTTPError as exc:
            reason = getattr(exc, "reason", None) or exc
            raise StoreUnavailableError(
                f"cannot reach S3 at {self._endpoint} for {where}: {type(reason).__name__}"
            ) from exc


def _parse_endpoint(endpoint: str) -> tuple[bool, str]:
    """(secure, host[:port]) of an ``http(s)://host:port`` endpoint, or ConfigError.

    Messages never repeat the endpoint: it might carry a password in ``user:pass@``.
    """
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("S3 endpoint must look like http(s)://host[:port]")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            "S3 endpoint must not contain user:password@; set the access and secret keys instead"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError("S3 endpoint must not have a path, query or fragment")
    return parts.scheme == "https", parts.netloc


def _http_client() -> urllib3.PoolManager:
    """Connections that give up on a dead endpoint within seconds, retrying only briefly."""
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=_CONNECT_TIMEOUT_S, read=_READ_TIMEOUT_S),
        retries=urllib3.Retry(total=_RETRIES, backoff_factor=0.2, status_forcelist=_RETRY_STATUSES),
        maxsize=16,
    )


@contextmanager
def _absent_is_changed(conditional: bool) -> Iterator[None]:
    """An ``If-Match`` put of a key that is gone lost its race just as a changed one did."""
    try:
        yield
    except ObjectNotFoundError as exc:
        if not conditional:
            raise
        raise PreconditionFailedError(str(exc)) from exc


def _from_s3_error(exc: S3Error, bucket: str, key: str | None, where: str) -> StoreError:
    if exc.code in _PRECONDITION_CODES:
        return PreconditionFailedError(f"{where} changed since it was read: {exc.code}")
    if exc.code == "NoSuchKey" and key is not None:
        return object_not_found(bucket, key)
    if exc.code == "NoSuchBucket":
        return bucket_not_found(bucket)
    if exc.code in _TRANSIENT_CODES or exc.response.status >= 500:
        return StoreUnavailableError(f"S3 failed on {where}, try again: {exc.code}")
    return StoreError(f"S3 refused the request on {where}: {exc.code}: {exc.message}")


def _info_from_headers(bucket: str, key: str, headers: Mapping[str, str]) -> ObjectInfo:
    """ObjectInfo from the headers of a GET or HEAD response."""
    lowered = _lowered(headers)
    return ObjectInfo(
        bucket=bucket,
        key=key,
        size=int(lowered.get("content-length", "0")),
        etag=lowered.get("etag", "").strip('"'),
        last_modified=_written_at(lowered),
        content_type=lowered.get("content-type", DEFAULT_CONTENT_TYPE),
        metadata={
            name.removeprefix(_META_PREFIX): value
            for name, value in lowered.items()
            if name.startswith(_META_PREFIX)
        },
    )


def _lowered(headers: Mapping[str, str]) -> dict[str, str]:
    """Headers with lowercase names: HTTP names are case-insensitive, servers vary."""
    return {name.lower(): value for name, value in headers.items()}


def _written_at(lowered: Mapping[str, str]) -> datetime:
    """When the object was written: ``Last-Modified``, else the response's ``Date``.

    A PUT response carries no Last-Modified on AWS, but its Date is when the write landed.
    """
    return parsedate_to_datetime(lowered.get("last-modified") or lowered["date"])
