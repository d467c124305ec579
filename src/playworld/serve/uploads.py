"""Turn untrusted uploaded bytes into a safe RGB prompt image, or refuse with a clear reason.

Only a few common raster formats are decoded (never PIL's EPS/PDF-style plugins that shell out),
the pixel count is checked from the header *before* decoding (so a decompression bomb never
allocates), PIL's :class:`~PIL.Image.DecompressionBombWarning` is an error, and truncated files
are refused instead of being silently padded.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

from playworld.errors import PlayworldError

ALLOWED_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP")
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
# A 64x64 world needs far less; 25 MP (e.g. a 6000x4000 photo) decodes in ~75 MB of RGB.
MAX_UPLOAD_PIXELS = 25_000_000
# Prompts are shrunk to this longest side on arrival: the world downsamples them anyway.
STORED_SIDE = 512


def _pixels(n: int) -> str:
    return f"{n / 1e6:.0f} megapixels" if n >= 1e6 else f"{n:,} pixels"


def decode_upload(
    data: bytes, max_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_UPLOAD_PIXELS
) -> Image.Image:
    """Decode ``data`` as an image prompt; return an RGB image whose longest side is <= 512."""
    if not data:
        raise PlayworldError("the upload is empty; choose an image file (PNG, JPEG, GIF, WebP or BMP)")
    if len(data) > max_bytes:
        raise PlayworldError(
            f"the upload is {len(data) / 2**20:.1f} MB; images up to {max_bytes / 2**20:.0f} MB are accepted"
        )
    limit = min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
            w, h = im.size
            if w * h > limit:
                raise PlayworldError(
                    f"the image is too large to decode safely: {w}x{h} = {_pixels(w * h)}; at most "
                    f"{_pixels(limit)} are accepted (shrink it first)"
                )
            im.load()  # raises on truncated or corrupt data
            rgb = im.convert("RGB")  # first frame of an animation; alpha dropped
        except PlayworldError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise PlayworldError(
                f"the image is too large to decode safely (a possible decompression bomb): {e} "
                f"At most {_pixels(limit)} are accepted."
            ) from None
        except UnidentifiedImageError:
            raise PlayworldError(
                "the upload is not an image playworld can read; use PNG, JPEG, GIF, WebP or BMP"
            ) from None
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise PlayworldError(f"the image is corrupt or truncated ({e}); try saving it again") from None
    rgb.thumbnail((STORED_SIDE, STORED_SIDE), Image.BILINEAR)
    return rgb
