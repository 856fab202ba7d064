"""S3-compatible storage for integration tests: moto's S3 server (PyPI ``moto[server]``, as no
MinIO is packaged here) and registry configurations that ``manage.py registry_config`` renders
for it.

Shared by the test of one registry on S3 (tests/registries/test_registry_config_s3.py) and the
test of two replicas on one bucket (tests/registries/test_registry_replicas_s3.py), so that both
run the registry on exactly the configuration an operator gets.
"""

from __future__ import annotations

import sys
from io import StringIO
from pathlib import Path
from typing import Any

import boto3
from django.core.management import call_command
from django.test import override_settings

from tests.support.processes import answers_http, free_port
from tests.support.stack import ManagedProcess, inherited_environment

BUCKET = "hosted-registry"
REGION = "us-east-1"
ACCESS_KEY = "AKIAH15EXAMPLE"
SECRET_KEY = "s3-secret-key-never-logged"


def s3_client(endpoint: str) -> Any:
    """A boto3 client of the S3 server at ``endpoint``, with the tests' keys."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )


def bucket_keys(endpoint: str) -> set[str]:
    """Every object key in the bucket."""
    pages = s3_client(endpoint).get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
    return {item["Key"] for page in pages for item in page.get("Contents", [])}


def start_s3_server(workdir: Path) -> tuple[ManagedProcess, str]:
    """moto's S3 server on a free 127.0.0.1 port, with the bucket created: the process (stop it)
    and its URL. Its log is ``workdir/moto.log``."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = ManagedProcess(
        "moto_server",
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=inherited_environment(),
        log_path=workdir / "moto.log",
        is_ready=lambda _process: answers_http(url, 200),
        cwd=workdir,
    ).start()
    try:
        s3_client(url).create_bucket(Bucket=BUCKET)
    except Exception:
        server.stop()
        raise
    return server, url


def render_s3_config(
    addr: str,
    *,
    endpoint: str,
    root: str,
    redis_url: str,
    storage_dir: Path,
    replicas: int = 1,
    **overrides: Any,
) -> str:
    """What ``manage.py registry_config --addr ADDR`` prints with S3 storage on ``endpoint``
    (under ``root`` in the bucket) and the blob-descriptor cache at ``redis_url``; ``overrides``
    are further settings. ``storage_dir`` is the disk storage that must stay unused."""
    with override_settings(
        REGISTRY_STORAGE="s3",
        REGISTRY_S3_BUCKET=BUCKET,
        REGISTRY_S3_REGION=REGION,
        REGISTRY_S3_ENDPOINT=endpoint,
        REGISTRY_S3_ACCESS_KEY=ACCESS_KEY,
        REGISTRY_S3_SECRET_KEY=SECRET_KEY,
        REGISTRY_S3_ROOT_DIRECTORY=f"/{root}",
        REGISTRY_REDIS_URL=redis_url,
        REGISTRY_DEBUG_ADDR="",
        **overrides,
    ):
        out = StringIO()
        call_command(
            "registry_config",
            addr=addr,
            storage_dir=str(storage_dir),
            replicas=replicas,
            stdout=out,
        )
    return out.getvalue()
