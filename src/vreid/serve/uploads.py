"""Uploaded images and query parameters, checked before anything is decoded: size in bytes, size in pixels,
format; times as epoch seconds or ISO 8601. Every refusal is a `RequestError` with its HTTP status."""
from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

from vreid.data.images import to_rgb
from vreid.errors import VreidError

#: Defaults of `vreid serve`: 8 MiB per upload, 40 megapixels per image (PIL's own bomb limit is ~89 Mpx).
DEFAULT_MAX_UPLOAD_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000


class RequestError(VreidError):
    """A request the service refuses; `status` is the HTTP status it answers with (4xx)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def read_limited(stream, max_bytes: int) -> bytes:
    """At most `max_bytes` from a file-like `stream`; one byte more is a 413."""
    data = stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise RequestError(413, f"upload is larger than the limit of {max_bytes} bytes; send a smaller image "
                                "(a vehicle crop of a few hundred pixels is enough)")
    if not data:
        raise RequestError(400, "the uploaded file is empty; send a JPEG or PNG image in the form field 'image'")
    return data


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """`data` decoded as 8-bit RGB; the pixel count is checked from the header, before decoding (bombs)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
                if width * height > max_pixels:
                    raise RequestError(413, f"image is {width} x {height} = {width * height} pixels, more than "
                                            f"the limit of {max_pixels}; resize it first")
                im.load()
                return to_rgb(im)
    except RequestError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise RequestError(413, f"image is too large to decode safely ({e}); resize it first") from e
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise RequestError(400, f"the upload is not an image that can be read ({type(e).__name__}: {e}); "
                                "send a JPEG or PNG file") from e


def image_suffix(data: bytes) -> str:
    """The file suffix for already-decoded image bytes (".png", ".jpg", ...), from PIL's format name."""
    with Image.open(io.BytesIO(data)) as im:
        fmt = (im.format or "png").lower()
    return {"jpeg": ".jpg", "mpo": ".jpg", "tiff": ".tif"}.get(fmt, f".{fmt}")


def parse_time(text: str | None, name: str) -> float | None:
    """Epoch seconds (UTC) from `text`, as `vreid search` reads it (`vreid.gallery.search.parse_time`); None or ""
    = no bound; a bad value is a 400 naming the parameter."""
    from vreid.gallery.search import SearchError, parse_time as parse_search_time

    if text is None or text.strip() == "":
        return None
    try:
        return parse_search_time(text, name)
    except SearchError as e:
        raise RequestError(400, str(e)) from None


def parse_cameras(text: str | None) -> list[int] | None:
    """Camera ids from "1,3,4" (spaces allowed); None or "" = every camera."""
    if text is None or text.strip() == "":
        return None
    try:
        return [int(part) for part in text.replace(" ", "").split(",") if part != ""]
    except ValueError:
        raise RequestError(400, f"cameras={text!r} is not a list of camera ids; give integers separated by "
                                "commas, e.g. cameras=1,3") from None
