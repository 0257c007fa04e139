"""The ranked-results figure: per query, a row of frame strips with coloured borders (Pillow).

Each cell is a strip of ``frames_per_cell`` frames inside a border of ``border`` pixels: blue for the
query, green for a gallery tracklet of the query's identity, red otherwise. The distance (and the
identity) is written under each gallery cell. Every size is fixed by :class:`RankedLayout`, so the
figure of ``num_rows`` queries and ``topk`` columns always has ``RankedLayout.size`` pixels.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

from PIL import Image, ImageDraw, ImageFont

from .frames import FrameCache, pick_frames

QUERY_COLOUR = (30, 90, 200)
CORRECT_COLOUR = (0, 160, 0)
WRONG_COLOUR = (220, 30, 30)
BACKGROUND = (255, 255, 255)
TEXT_COLOUR = (0, 0, 0)


@dataclass(frozen=True)
class RankedLayout:
    """Pixel geometry of a ranked-results figure (all sizes in pixels; frames are height x width)."""

    num_rows: int
    topk: int
    frame_height: int = 64
    frame_width: int = 32
    frames_per_cell: int = 4
    border: int = 4
    gap: int = 6
    query_gap: int = 18
    label_height: int = 14
    header_height: int = 14
    row_gap: int = 8
    margin: int = 8

    @property
    def cell_width(self) -> int:
        return self.frames_per_cell * self.frame_width + 2 * self.border

    @property
    def cell_height(self) -> int:
        return self.frame_height + 2 * self.border

    @property
    def size(self) -> Tuple[int, int]:
        """(width, height) of the whole figure."""
        width = 2 * self.margin + (self.topk + 1) * self.cell_width + self.query_gap + (self.topk - 1) * self.gap
        rows = self.num_rows * (self.cell_height + self.label_height) + (self.num_rows - 1) * self.row_gap
        return width, 2 * self.margin + self.header_height + rows

    def cell_origin(self, row: int, column: int) -> Tuple[int, int]:
        """Top-left corner of a cell; column 0 is the query, column j the rank-j gallery tracklet."""
        x = self.margin
        if column:
            x += self.cell_width + self.query_gap + (column - 1) * (self.cell_width + self.gap)
        y = self.margin + self.header_height + row * (self.cell_height + self.label_height + self.row_gap)
        return x, y


@dataclass
class RankedCell:
    """One tracklet in a row: frame paths, the text under it, its border colour."""

    frames: Sequence[str]
    label: str
    colour: Tuple[int, int, int]


def draw_ranked_results(rows: Sequence[Sequence[RankedCell]], layout: RankedLayout) -> Tuple[Image.Image, List[str]]:
    """Compose the figure: ``rows[i][0]`` is query i, ``rows[i][1:]`` its ranked gallery cells.

    Returns the image and the frame paths that were missing (drawn grey).
    """
    if len(rows) != layout.num_rows:
        raise ValueError(f"layout is for {layout.num_rows} rows; got {len(rows)}")
    image = Image.new("RGB", layout.size, BACKGROUND)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    cache = FrameCache(layout.frame_width, layout.frame_height)
    titles = ["query"] + [f"rank {j}" for j in range(1, layout.topk + 1)]
    for column, title in enumerate(titles):
        x, _ = layout.cell_origin(0, column)
        _draw_centred(draw, font, title, x, layout.margin, layout.cell_width, layout.header_height)
    for r, row in enumerate(rows):
        if len(row) > layout.topk + 1:
            raise ValueError(f"row {r} has {len(row) - 1} gallery cells; the layout holds {layout.topk}")
        for column, cell in enumerate(row):
            x, y = layout.cell_origin(r, column)
            draw.rectangle([x, y, x + layout.cell_width - 1, y + layout.cell_height - 1], fill=cell.colour)
            for i, path in enumerate(pick_frames(cell.frames, layout.frames_per_cell)):
                image.paste(cache.get(path), (x + layout.border + i * layout.frame_width, y + layout.border))
            label_y = y + layout.cell_height
            _draw_centred(draw, font, cell.label, x, label_y, layout.cell_width, layout.label_height)
    return image, cache.missing


def _draw_centred(draw: ImageDraw.ImageDraw, font, text: str, x: int, y: int, width: int, height: int) -> None:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    draw.text(
        (x + (width - (right - left)) / 2 - left, y + (height - (bottom - top)) / 2 - top),
        text, fill=TEXT_COLOUR, font=font,
    )
