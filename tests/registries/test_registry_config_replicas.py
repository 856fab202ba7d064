"""``registry_config --replicas N`` (issue 16, item 4): one configuration for several registry
processes behind a load balancer is refused unless they can share it (one bucket, one
blob-descriptor cache), and every replica rendered from the same settings gets the same
``http.secret``. The replicas themselves run in test_registry_replicas_s3.py."""

from __future__ import annotations

from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.core.management import CommandError, call_command

SHARED = {
    "REGISTRY_STORAGE": "s3",
    "REGISTRY_S3_BUCKET": "registry-bucket",
    "REGISTRY_REDIS_URL": "redis://redis.internal:6379/2",
}


def render(settings, tmp_path: Path, *, addr: str = "0.0.0.0:5000", **options: Any) -> str:
    settings.REGISTRY_DEBUG_ADDR = ""
    out = StringIO()
    call_command(
        "registry_config", addr=addr, storage_dir=str(tmp_path / "data"), stdout=out, **options
    )
    return out.getvalue()


def refusal(settings, tmp_path: Path, replicas: int) -> str:
    with pytest.raises(CommandError) as refused:
        render(settings, tmp_path, replicas=replicas)
    return str(refused.value)


def http_secret(config: str) -> str:
    return str(yaml.safe_load(config)["http"]["secret"])


def test_replicas_on_one_bucket_with_one_cache(settings, tmp_path: Path) -> None:
    for name, value in SHARED.items():
        setattr(settings, name, value)

    config = yaml.safe_load(render(settings, tmp_path, replicas=3))

    assert config["storage"]["s3"]["bucket"] == "registry-bucket"
    assert config["storage"]["cache"] == {"blobdescriptor": "redis"}


def test_disk_storage_is_refused_for_several_replicas(settings, tmp_path: Path) -> None:
    settings.REGISTRY_REDIS_URL = SHARED["REGISTRY_REDIS_URL"]

    assert refusal(settings, tmp_path, 2) == (
        "2 replicas need storage they share: set REGISTRY_STORAGE=s3 and REGISTRY_S3_BUCKET. On "
        "filesystem storage each replica keeps its own REGISTRY_STORAGE_DIR, so an image pushed "
        "through one is 'manifest unknown' through another and an upload started on one is "
        "BLOB_UPLOAD_UNKNOWN on the next."
    )
    # One replica on disk is the default, and stays so.
    assert "filesystem:" in render(settings, tmp_path)


def test_an_in_memory_cache_is_refused_for_several_replicas(settings, tmp_path: Path) -> None:
    settings.REGISTRY_STORAGE, settings.REGISTRY_S3_BUCKET = "s3", "registry-bucket"

    assert refusal(settings, tmp_path, 2) == (
        "2 replicas need REGISTRY_REDIS_URL, the blob-descriptor cache they share: each "
        "replica's in-memory cache would go on describing blobs that another deleted."
    )


def test_no_replicas_is_refused(settings, tmp_path: Path) -> None:
    assert refusal(settings, tmp_path, 0) == "--replicas 0 is not valid: give 1 or more."


def test_every_replica_of_one_deployment_has_the_same_http_secret(settings, tmp_path: Path) -> None:
    """``http.secret`` is derived from ``SECRET_KEY`` (DJANGO_SECRET_KEY), nothing of the host:
    replicas rendered anywhere from the same settings read each other's upload state, and the
    secret key itself is never written to the file."""
    settings.SECRET_KEY = "the-deployment's-secret-key"
    secret = http_secret(render(settings, tmp_path))

    assert http_secret(render(settings, tmp_path / "elsewhere", addr="10.0.0.7:5001")) == secret
    assert len(secret) == 32
    assert settings.SECRET_KEY not in render(settings, tmp_path)
    settings.SECRET_KEY = "another-deployment's-secret-key"
    assert http_secret(render(settings, tmp_path)) != secret
