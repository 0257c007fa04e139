"""``index.html`` of a report: one self-contained page (inline style, images by relative path, no scripts)."""
from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from typing import Any, List, Mapping, Sequence, Tuple

_STYLE = """
body { font-family: sans-serif; margin: 1.5em auto; max-width: 1400px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ccc; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { border: 1px solid #ccc; padding: 3px 8px; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.run td { font-weight: bold; } figure { margin: 0.8em 0; } figcaption { font-size: 0.9em; color: #555; }
img { max-width: 100%; } pre { background: #f7f7f7; padding: 0.6em; overflow-x: auto; font-size: 0.85em; }
.note { color: #a40; }
"""


@dataclass
class Section:
    """A titled part of the page: figures (file name relative to the page, caption), tables, notes."""

    title: str
    figures: List[Tuple[str, str]] = field(default_factory=list)
    tables: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)


def metrics_table(header: Sequence[str], rows: Sequence[Sequence[Any]], highlight: Sequence[bool]) -> str:
    """An HTML table; numbers right-aligned, ``highlight[i]`` rows bold."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = []
    for row, bold in zip(rows, highlight):
        cells = "".join(
            f'<td class="num">{html.escape(str(v))}</td>' if isinstance(v, (int, float)) or _is_number(v)
            else f"<td>{html.escape(str(v))}</td>"
            for v in row
        )
        body.append(f'<tr class="run">{cells}</tr>' if bold else f"<tr>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def json_block(title: str, value: Mapping[str, Any]) -> str:
    """A caption and the value pretty-printed as JSON."""
    text = json.dumps(value, indent=2, sort_keys=True, default=str)
    return f"<p>{html.escape(title)}</p><pre>{html.escape(text)}</pre>"


def render_page(title: str, intro: Sequence[str], sections: Sequence[Section]) -> str:
    """The whole page: title, intro paragraphs, a contents list, then each section."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    parts += [f"<p>{html.escape(p)}</p>" for p in intro]
    contents = "".join(f'<li><a href="#s{i}">{html.escape(s.title)}</a></li>' for i, s in enumerate(sections))
    parts.append(f"<ul>{contents}</ul>")
    for i, section in enumerate(sections):
        parts.append(f'<h2 id="s{i}">{html.escape(section.title)}</h2>')
        parts += [f'<p class="note">{html.escape(n)}</p>' for n in section.notes]
        parts += list(section.tables)
        for name, caption in section.figures:
            src = html.escape(name, quote=True)
            parts.append(
                f'<figure><a href="{src}"><img src="{src}" alt="{html.escape(caption, quote=True)}"></a>'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
    parts.append("</body></html>")
    return "\n".join(parts)
