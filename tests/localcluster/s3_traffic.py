"""Bytes a MinIO server sent from one bucket, read from its own Prometheus metrics (counted at the server).

MinIO signs its metrics endpoint with a JWT (HS512, keyed by the root secret, issuer "prometheus"),
the same token `mc admin prometheus generate` prints; we make it here rather than depend on mc.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import urllib.request

from localcluster.s3 import S3Server


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def metrics_token(access_key: str, secret_key: str) -> str:
    header = _b64(json.dumps({"alg": "HS512", "typ": "JWT"}).encode())
    claims = _b64(json.dumps({"exp": int(time.time()) + 3600, "sub": access_key, "iss": "prometheus"}).encode())
    signature = hmac.new(secret_key.encode(), f"{header}.{claims}".encode(), hashlib.sha512).digest()
    return f"{header}.{claims}.{_b64(signature)}"


def bucket_bytes_sent(server: S3Server, bucket: str) -> int:
    """`minio_bucket_traffic_sent_bytes` of `bucket`: object bytes served by GETs (0 before the first)."""
    request = urllib.request.Request(f"{server.endpoint_url}/minio/v2/metrics/bucket", headers={
        "Authorization": f"Bearer {metrics_token(server.access_key, server.secret_key)}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    pattern = rf'^minio_bucket_traffic_sent_bytes{{[^}}]*bucket="{re.escape(bucket)}"[^}}]*}} (\S+)$'
    return sum(int(float(m.group(1))) for m in re.finditer(pattern, text, re.MULTILINE))
