"""Render one report document to Markdown (figures as files beside it) and to self-contained HTML.

A report is a flat list of blocks (heading, paragraph, list, table, figure). Both outputs come from the
same blocks, so the Markdown and the HTML can never say different things; the HTML embeds every figure
as a base64 PNG `data:` URI and uses no external stylesheet, script or image.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Para:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    headers: list[str]
    rows: list[list[Any]]
    caption: str = ""


@dataclass
class Figure:
    path: Path
    caption: str


@dataclass
class Document:
    title: str
    blocks: list[Any] = field(default_factory=list)

    def add(self, *blocks: Any) -> None:
        self.blocks.extend(blocks)


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def to_markdown(doc: Document, base: Path) -> str:
    """Markdown with figures referenced relative to `base` (the report directory)."""
    out = [f"# {doc.title}", ""]
    for b in doc.blocks:
        if isinstance(b, Heading):
            out += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, Para):
            out += [b.text, ""]
        elif isinstance(b, Bullets):
            out += [f"- {i}" for i in b.items] + [""]
        elif isinstance(b, Table):
            if b.caption:
                out += [f"*{b.caption}*", ""]
            out.append("| " + " | ".join(b.headers) + " |")
            out.append("|" + "|".join("---" for _ in b.headers) + "|")
            out += ["| " + " | ".join(_cell(c).replace("|", "\\|") for c in r) + " |" for r in b.rows]
            out.append("")
        elif isinstance(b, Figure):
            rel = b.path.relative_to(base) if b.path.is_relative_to(base) else b.path
            out += [f"![{b.caption}]({rel.as_posix()})", "", f"*{b.caption}*", ""]
    return "\n".join(out).rstrip() + "\n"


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:1em 0;font-size:14px}th,td{border:1px solid #bbb;padding:4px 8px}"
    "th{background:#f0f0f0}td{text-align:right}td:first-child{text-align:left}img{max-width:100%}"
    "figcaption,caption{font-style:italic;color:#555;margin:.3em 0}code{background:#f4f4f4}"
)


def _inline(text: str) -> str:
    """Escape text, then turn `code` and **bold** spans into tags (the only Markdown used inline)."""
    import re

    t = html.escape(text)
    t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", t)


def to_html(doc: Document) -> str:
    """One HTML file with every figure inlined as a data URI (no external resource of any kind)."""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(doc.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(doc.title)}</h1>",
    ]
    for b in doc.blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{_inline(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            out.append(f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, Bullets):
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            cap = f"<caption>{_inline(b.caption)}</caption>" if b.caption else ""
            head = "".join(f"<th>{_inline(h)}</th>" for h in b.headers)
            body = "".join("<tr>" + "".join(f"<td>{_inline(_cell(c))}</td>" for c in r) + "</tr>" for r in b.rows)
            out.append(f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif isinstance(b, Figure):
            data = base64.b64encode(b.path.read_bytes()).decode("ascii")
            out.append(
                f'<figure><img alt="{html.escape(b.caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{_inline(b.caption)}</figcaption></figure>"
            )
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_document(doc: Document, out_dir: Path, figures: Sequence[Path] = ()) -> tuple[Path, Path]:
    """Write report.md and report.html into `out_dir` (which already holds the figure files)."""
    md = out_dir / "report.md"
    page = out_dir / "report.html"
    md.write_text(to_markdown(doc, out_dir), encoding="utf-8")
    page.write_text(to_html(doc), encoding="utf-8")
    return md, page
