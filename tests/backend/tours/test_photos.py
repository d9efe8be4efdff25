"""Photo uploads through Django's storage API: local files and S3 (moto's server as the S3 API),
photo_urls on the tour, and 400 for anything that is not a small real image."""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import requests
from PIL import Image

from tests.support.net import free_port
from tests.support.processes import Process, python

pytestmark = [pytest.mark.postgres, pytest.mark.processes]

MAX_BYTES = 200_000


def _image(fmt: str = "PNG", size: tuple[int, int] = (64, 48), noise: bool = False) -> bytes:
    image = Image.new("RGB", size, (200, 80, 20))
    if noise:
        image = Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3))
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def _upload(staff: Any, tour_id: str, name: str, data: bytes, ctype: str) -> requests.Response:
    return staff.post(f"/api/tours/{tour_id}/photos/", files={"file": (name, data, ctype)})


@pytest.fixture(scope="module")
def local(
    module_replicas: Any, module_backend_env: dict[str, str], api_client: Any
) -> dict[str, Any]:
    (base,) = module_replicas(1, extra_env={"PHOTO_MAX_BYTES": str(MAX_BYTES)})
    staff = api_client.staff(base, module_backend_env)
    return {
        "base": base,
        "staff": staff,
        "tour": api_client.make_tour(staff),
        "env": module_backend_env,
    }


def test_local_upload_is_stored_and_listed_on_the_tour(local: dict[str, Any]) -> None:
    staff, tour = local["staff"], local["tour"]
    png, jpeg = _image("PNG"), _image("JPEG")
    resp = _upload(staff, tour["id"], "a.png", png, "image/png")
    assert resp.status_code == 201, resp.text
    assert resp.json()["content_type"] == "image/png" and resp.json()["size"] == len(png)
    assert _upload(staff, tour["id"], "b.jpg", jpeg, "image/jpeg").status_code == 201

    shown = requests.get(f"{local['base']}/api/tours/{tour['id']}/", timeout=10).json()
    assert len(shown["photo_urls"]) == 2
    first = requests.get(f"{local['base']}{shown['photo_urls'][0]}", timeout=10)
    assert first.status_code == 200 and first.content == png
    media = os.path.join(local["env"]["MEDIA_ROOT"], "tours", tour["id"])
    assert len(os.listdir(media)) == 2


def test_deleting_a_tour_deletes_its_stored_photos(local: dict[str, Any], api_client: Any) -> None:
    staff = local["staff"]
    tour = api_client.make_tour(staff)
    assert _upload(staff, tour["id"], "a.gif", _image("GIF"), "image/gif").status_code == 201
    media = os.path.join(local["env"]["MEDIA_ROOT"], "tours", tour["id"])
    assert len(os.listdir(media)) == 1
    assert staff.delete(f"/api/tours/{tour['id']}/").status_code == 204
    assert os.listdir(media) == []


def test_bad_uploads_get_400_json(local: dict[str, Any], api_client: Any) -> None:
    staff, tour = local["staff"], local["tour"]
    cases = {
        "text renamed": ("evil.jpg", b"#!/bin/sh\necho hi\n" * 20, "image/jpeg", "invalid_image"),
        "bmp": ("x.bmp", _image("BMP"), "image/bmp", "invalid_image"),
        "truncated png": (
            "t.png",
            _image("PNG", noise=True, size=(80, 80))[:1500],
            "image/png",
            "invalid_image",
        ),
        "empty": ("e.png", b"", "image/png", None),
        "too large": (
            "big.png",
            _image("PNG", size=(300, 250), noise=True),
            "image/png",
            "file_too_large",
        ),
    }
    for label, (name, data, ctype, code) in cases.items():
        resp = _upload(staff, tour["id"], name, data, ctype)
        assert resp.status_code == 400, (label, resp.status_code, resp.text)
        body = resp.json()
        assert "file" in body.get("errors", {}), (label, body)
        if code:
            assert body["code"] == code, (label, body)
    no_file = staff.post(f"/api/tours/{tour['id']}/photos/", data={"other": "x"})
    assert no_file.status_code == 400 and "file" in no_file.json()["errors"]
    as_json = staff.post(f"/api/tours/{tour['id']}/photos/", json={"file": "x"})
    assert as_json.status_code == 415
    huge = _upload(staff, tour["id"], "huge.png", b"\0" * (MAX_BYTES + 200_000), "image/png")
    assert huge.status_code == 413 and huge.json()["code"] == "body_too_large"
    missing = _upload(staff, str(uuid.uuid4()), "a.png", _image(), "image/png")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    user = api_client.user(local["base"])
    assert _upload(user, tour["id"], "a.png", _image(), "image/png").status_code == 403
    shown = requests.get(f"{local['base']}/api/tours/{tour['id']}/", timeout=10).json()
    assert len(shown["photo_urls"]) <= 2, "no rejected upload was recorded"


@pytest.fixture
def moto_s3(tmp_path: Any) -> Iterator[str]:
    port = free_port()
    proc = Process(
        python("-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)),
        log_path=tmp_path / "moto.log",
    )
    proc.start()
    try:
        proc.wait_http(f"http://127.0.0.1:{port}/moto-api/", timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


@pytest.mark.slow
def test_s3_upload_through_django_storages(
    moto_s3: str, backend_env: dict[str, str], replicas: Any, api_client: Any
) -> None:
    creds = {
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
        "region_name": "us-east-1",
    }
    s3 = boto3.client("s3", endpoint_url=moto_s3, **creds)
    s3.create_bucket(Bucket="tour-photos")
    (base,) = replicas(
        1,
        env=backend_env,
        extra_env={
            "AWS_STORAGE_BUCKET_NAME": "tour-photos",
            "AWS_S3_ENDPOINT_URL": moto_s3,
            "AWS_S3_REGION_NAME": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        },
    )
    staff = api_client.staff(base, backend_env)
    tour = api_client.make_tour(staff)
    jpeg = _image("JPEG", size=(120, 90))
    resp = _upload(staff, tour["id"], "shot.jpg", jpeg, "image/jpeg")
    assert resp.status_code == 201, resp.text

    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="tour-photos").get("Contents", [])]
    assert (
        len(keys) == 1 and keys[0].startswith(f"tours/{tour['id']}/") and keys[0].endswith(".jpeg")
    )
    assert s3.get_object(Bucket="tour-photos", Key=keys[0])["Body"].read() == jpeg

    url = requests.get(f"{base}/api/tours/{tour['id']}/", timeout=10).json()["photo_urls"][0]
    assert url.startswith(moto_s3)
    fetched = requests.get(url, timeout=10)
    assert fetched.status_code == 200 and fetched.content == jpeg
    bad = _upload(staff, tour["id"], "x.gif", b"GIF89a-not-really", "image/gif")
    assert bad.status_code == 400
    assert len(s3.list_objects_v2(Bucket="tour-photos").get("Contents", [])) == 1
