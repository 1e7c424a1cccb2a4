"""`contact-sheet.png`: a grid of thumbnails labelled with item ids, because people would rather look.

Built by rank 0 at the end from the committed objects, capped at MAX_TILES so a huge job still
finishes quickly (the sheet then says how many it shows).
"""

from __future__ import annotations

import io
import math
from concurrent.futures import ThreadPoolExecutor

from kubeinfer_runtime.ledger import Entry
from kubeinfer_runtime.storage import ObjectStore

NAME = "contact-sheet.png"
MAX_TILES = 256
THUMB = 128
LABEL = 16
GAP = 4


def contact_sheet(store: ObjectStore, entries: list[Entry], total: int, thumb: int = THUMB) -> bytes:
    """PNG bytes of a grid of the first MAX_TILES of `entries` (of `total` images), each with its id underneath."""
    from PIL import Image, ImageDraw, ImageOps

    shown = entries[:MAX_TILES]
    cols = max(1, min(8, math.ceil(math.sqrt(len(shown)))))
    rows = max(1, math.ceil(len(shown) / cols))
    footer = LABEL if total > len(shown) else 0
    cell_w, cell_h = thumb + GAP, thumb + LABEL
    sheet = Image.new("RGB", (cols * cell_w + GAP, rows * cell_h + GAP + footer), "white")
    draw = ImageDraw.Draw(sheet)
    with ThreadPoolExecutor(max_workers=8) as pool:
        blobs = list(pool.map(lambda e: store.get(e.key), shown))
    for n, (entry, blob) in enumerate(zip(shown, blobs, strict=True)):
        image = Image.open(io.BytesIO(blob)).convert("RGB")
        small = max(image.size) < thumb  # tiny test images: enlarge with visible pixels, not blur
        resample = Image.Resampling.NEAREST if small else Image.Resampling.LANCZOS
        image = ImageOps.contain(image, (thumb, thumb), resample)
        x, y = GAP + (n % cols) * cell_w, GAP + (n // cols) * cell_h
        sheet.paste(image, (x + (thumb - image.width) // 2, y + (thumb - image.height) // 2))
        draw.text((x, y + thumb + 2), entry.id[:24], fill="black")
    if footer:
        draw.text((GAP, rows * cell_h + GAP), f"first {len(shown)} of {total} images", fill="black")
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()
