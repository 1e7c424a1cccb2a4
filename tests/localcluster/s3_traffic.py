"""Bytes a MinIO server sent from one bucket, read from its own Prometheus metrics (counted at the server).

MinIO signs its metrics endpoint with a JWT (HS512, keyed by the root secret, issuer "prometheus"),
the same token `mc admin prometheus generate` prints; we make it here rather than depend on mc.
MinIO serves a metrics snapshot for 10 s after computing it, so `settled_bytes_sent` waits until a
snapshot newer than the call is seen: the value changes, or a whole cache period passes unchanged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import urllib.request

CACHE_SECONDS = 10.0


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def metrics_token(access_key: str, secret_key: str) -> str:
    header = _b64(json.dumps({"alg": "HS512", "typ": "JWT"}).encode())
    claims = _b64(json.dumps({"exp": int(time.time()) + 3600, "sub": access_key, "iss": "prometheus"}).encode())
    signature = hmac.new(secret_key.encode(), f"{header}.{claims}".encode(), hashlib.sha512).digest()
    return f"{header}.{claims}.{_b64(signature)}"


def bucket_bytes_sent(env: dict[str, str], bucket: str) -> int:
    """`minio_bucket_traffic_sent_bytes` of `bucket` (bodies of GET and LIST responses; 0 before the first).

    `env`: the AWS_ENDPOINT_URL / AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY of the server as this host
    reaches it (`S3Server.env()`, or a cluster backend's `s3_host_env()`).
    """
    token = metrics_token(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])
    request = urllib.request.Request(f"{env['AWS_ENDPOINT_URL'].rstrip('/')}/minio/v2/metrics/bucket",
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    pattern = rf'^minio_bucket_traffic_sent_bytes{{[^}}]*bucket="{re.escape(bucket)}"[^}}]*}} (\S+)$'
    return sum(int(float(m.group(1))) for m in re.finditer(pattern, text, re.MULTILINE))


def settled_bytes_sent(env: dict[str, str], bucket: str) -> int:
    """`bucket_bytes_sent` from a snapshot taken after this call began (so it counts every earlier read)."""
    first = bucket_bytes_sent(env, bucket)
    deadline = time.monotonic() + CACHE_SECONDS + 1.5
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = bucket_bytes_sent(env, bucket)
        if now != first:  # a new snapshot, computed after the first read
            return now
    return bucket_bytes_sent(env, bucket)  # a whole period unchanged: the first value was current
