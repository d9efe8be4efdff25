"""Upload validation (pure apart from reading the file): real images of known types, bounded size."""

from __future__ import annotations

from typing import IO

from PIL import Image, UnidentifiedImageError

from backend.common.errors import ValidationFailed

ALLOWED_FORMATS = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "WEBP": "image/webp",
}
MAX_PIXELS = 40_000_000


class InvalidImage(ValidationFailed):
    code = "invalid_image"


class FileTooLarge(ValidationFailed):
    code = "file_too_large"


def _invalid(message: str, kind: type[ValidationFailed] = InvalidImage) -> ValidationFailed:
    return kind(message, errors={"file": [message]})


def validate_image(file: IO[bytes], size: int, max_bytes: int) -> str:
    """The content type of a valid upload; raises ValidationFailed (400) otherwise."""
    if size <= 0:
        raise _invalid("The file is empty.")
    if size > max_bytes:
        raise _invalid(f"The file is larger than {max_bytes} bytes.", FileTooLarge)
    try:
        file.seek(0)
        with Image.open(file) as image:
            fmt = image.format or ""
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise _invalid("The image has too many pixels.")
            image.verify()
    except ValidationFailed:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError):
        raise _invalid("The file is not a valid image.") from None
    finally:
        file.seek(0)
    if fmt not in ALLOWED_FORMATS:
        raise _invalid(f"Image type {fmt or 'unknown'} is not allowed (JPEG, PNG, GIF, WebP).")
    return ALLOWED_FORMATS[fmt]
