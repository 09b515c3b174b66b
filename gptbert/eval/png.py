"""A tiny dependency-free PNG bar chart (matplotlib is not a dependency of gptbert).

`bar_chart_png(path, title, labels, series)` draws horizontal grouped bars
(one group per label, one bar per series, e.g. one per scoring mode) with
value labels, a dashed chance line and a legend, rasterised in pure Python
with the classic 5x7 pixel font and written as an 8-bit RGB PNG with zlib.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

from ..io import atomic_save

# Classic 5x7 font, ASCII 32..126: five column bytes per glyph, bit 0 = top row.
_FONT_HEX = (
    "0000000000" "00005f0000" "0007000700" "147f147f14" "242a7f2a12" "2313086462" "3649552250" "0005030000"
    "001c224100" "0041221c00" "082a1c2a08" "08083e0808" "0050300000" "0808080808" "0060600000" "2010080402"
    "3e5149453e" "00427f4000" "4261514946" "2141454b31" "1814127f10" "2745454539" "3c4a494930" "0171090503"
    "3649494936" "064949291e" "0036360000" "0056360000" "0008142241" "1414141414" "4122140800" "0201510906"
    "3249794136" "7e1111117e" "7f49494936" "3e41414122" "7f4141221c" "7f49494941" "7f09090101" "3e41415132"
    "7f0808087f" "00417f4100" "2040413f01" "7f08142241" "7f40404040" "7f0204027f" "7f0408107f" "3e4141413e"
    "7f09090906" "3e4151215e" "7f09192946" "4649494931" "01017f0101" "3f4040403f" "1f2040201f" "7f2018207f"
    "6314081463" "0304780403" "6151494543" "00007f4141" "0204081020" "41417f0000" "0402010204" "4040404040"
    "0001020400" "2054545478" "7f48444438" "3844444420" "384444487f" "3854545418" "087e090102" "081454543c"
    "7f08040478" "00447d4000" "2040443d00" "007f102844" "00417f4000" "7c04180478" "7c08040478" "3844444438"
    "7c14141408" "081414187c" "7c08040408" "4854545420" "043f444020" "3c4040207c" "1c2040201c" "3c4030403c"
    "4428102844" "0c5050503c" "4464544c44" "0008364100" "00007f0000" "0041360800" "0201020402"
)
_GLYPHS = {chr(32 + i): bytes.fromhex(_FONT_HEX[10 * i: 10 * i + 10]) for i in range(len(_FONT_HEX) // 10)}

PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]
WHITE, BLACK, GREY, LIGHT = (255, 255, 255), (0, 0, 0), (120, 120, 120), (225, 225, 225)


class Canvas:
    def __init__(self, width: int, height: int, background=WHITE):
        self.w, self.h = width, height
        self.px = [bytearray(bytes(background) * width) for _ in range(height)]

    def rect(self, x0: int, y0: int, x1: int, y1: int, color) -> None:
        x0, x1 = max(0, min(x0, x1)), min(self.w, max(x0, x1))
        y0, y1 = max(0, min(y0, y1)), min(self.h, max(y0, y1))
        if x1 <= x0:
            return
        row = bytes(color) * (x1 - x0)
        for y in range(y0, y1):
            self.px[y][3 * x0: 3 * x1] = row

    def text(self, x: int, y: int, s: str, color=BLACK, scale: int = 1) -> int:
        """Draw `s` with its top-left at (x, y); returns the x after the text."""
        for ch in s:
            glyph = _GLYPHS.get(ch, _GLYPHS["?"])
            for cx, col in enumerate(glyph):
                for cy in range(7):
                    if col >> cy & 1:
                        self.rect(x + cx * scale, y + cy * scale, x + (cx + 1) * scale, y + (cy + 1) * scale, color)
            x += 6 * scale
        return x

    def png(self) -> bytes:
        raw = b"".join(b"\x00" + bytes(row) for row in self.px)

        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

        header = struct.pack(">IIBBBBB", self.w, self.h, 8, 2, 0, 0, 0)
        return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def text_width(s: str, scale: int = 1) -> int:
    return 6 * scale * len(s)


def bar_chart_png(path: str | Path, title: str, labels: Sequence[str], series: dict[str, Sequence[float]],
                  vmax: float = 100.0, chance: float | None = 50.0, scale: int = 2) -> Path:
    """Horizontal grouped bar chart of values in [0, vmax] (percent accuracies)."""
    names = list(series)
    n_series = max(1, len(names))
    bar_h = (9 if n_series <= 4 else 5) * scale  # tall enough for a value label when few series
    group_h = n_series * bar_h + 4 * scale
    label_w = max((text_width(lbl, scale) for lbl in labels), default=0) + 8 * scale
    plot_w = 250 * scale
    value_w = text_width("100.0", scale) + 6 * scale
    top = 22 * scale + 10 * scale * ((len(names) + 2) // 3)
    width = label_w + plot_w + value_w + 10 * scale
    height = top + group_h * len(labels) + 16 * scale
    c = Canvas(width, height)
    c.text(6 * scale, 4 * scale, title, BLACK, scale)
    lx, ly = 6 * scale, 15 * scale  # legend, three entries per line
    for i, name in enumerate(names):
        color = PALETTE[i % len(PALETTE)]
        x = lx + (i % 3) * (plot_w // 2)
        y = ly + (i // 3) * 10 * scale
        c.rect(x, y, x + 7 * scale, y + 7 * scale, color)
        c.text(x + 10 * scale, y, name, BLACK, scale)
    x0 = label_w
    for tick in range(0, 101, 10):  # light grid every 10%
        x = x0 + int(plot_w * tick / 100)
        c.rect(x, top - 2 * scale, x + 1, top + group_h * len(labels), LIGHT)
    for g, lbl in enumerate(labels):
        gy = top + g * group_h
        c.text(x0 - 4 * scale - text_width(lbl, scale), gy + (group_h - 7 * scale) // 2, lbl, BLACK, scale)
        for i, name in enumerate(names):
            v = series[name][g]
            if v is None:
                continue
            y = gy + 2 * scale + i * bar_h
            w = int(plot_w * max(0.0, min(v, vmax)) / vmax)
            c.rect(x0, y, x0 + w, y + bar_h - scale, PALETTE[i % len(PALETTE)])
            if bar_h >= 8 * scale:
                c.text(x0 + w + 3 * scale, y + (bar_h - scale - 7 * scale) // 2, f"{v:.1f}", GREY, scale)
    axis_y = top + group_h * len(labels)
    c.rect(x0, top - 2 * scale, x0 + 1, axis_y, BLACK)
    c.rect(x0, axis_y, x0 + plot_w, axis_y + 1, BLACK)
    for tick in range(0, 101, 25):
        x = x0 + int(plot_w * tick / 100)
        c.text(x - text_width(str(tick), scale) // 2, axis_y + 4 * scale, str(tick), BLACK, scale)
    if chance is not None:  # dashed chance line
        x = x0 + int(plot_w * chance / vmax)
        for y in range(top - 2 * scale, axis_y, 6 * scale):
            c.rect(x, y, x + scale, y + 3 * scale, BLACK)
    path = Path(path)
    atomic_save(path, lambda tmp: tmp.write_bytes(c.png()))
    return path
