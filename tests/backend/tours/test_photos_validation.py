"""Upload validation (pure): only real JPEG/PNG/GIF/WebP images under the size limit pass."""

from __future__ import annotations

import io

import pytest

from backend.common.errors import ValidationFailed
from backend.tours.photos import validate_image
from tests.backend.tours.test_photos import MAX_BYTES, _image


@pytest.mark.parametrize(
    ("data", "ok"),
    [
        (_image("PNG"), "image/png"),
        (_image("JPEG"), "image/jpeg"),
        (_image("GIF"), "image/gif"),
        (_image("WEBP"), "image/webp"),
        (_image("BMP"), None),
        (b"GIF89a" + b"\0" * 40, None),
        (b"plain text", None),
    ],
)
def test_validator_accepts_only_real_images_of_allowed_types(data: bytes, ok: str | None) -> None:
    stream = io.BytesIO(data)
    if ok:
        assert validate_image(stream, len(data), MAX_BYTES) == ok
        assert stream.tell() == 0, "the stream is rewound for storage"
    else:
        with pytest.raises(ValidationFailed) as caught:
            validate_image(stream, len(data), MAX_BYTES)
        assert caught.value.status == 400 and caught.value.code == "invalid_image"
    with pytest.raises(ValidationFailed) as caught:
        validate_image(io.BytesIO(data), MAX_BYTES + 1, MAX_BYTES)
    assert caught.value.code == "file_too_large"
