"""The report's building blocks (headings, paragraphs, bullets, tables, images) and their rendering to markdown and to
one self-contained HTML page from the same list (:mod:`supo.report.document` says what goes in them)."""

from __future__ import annotations

import base64
import html
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from supo.report.stats import BORDERLINE, HELD, INCONCLUSIVE, NOT_EVALUATED, NOT_HELD

DASH = "–"


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Para:
    """A paragraph; ``**bold**`` (a verdict alone in bold: a coloured badge in HTML) and ``code`` in backticks are
    the only markup."""

    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Image:
    """A PNG under the report folder (``path`` relative to it)."""

    path: str
    alt: str


Block = Union[Heading, Para, Bullets, Table, Image]


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: Sequence[Block]) -> str:
    """The blocks as GitHub-flavoured markdown (figures as relative image links)."""
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, Para):
            out += [b.text, ""]
        elif isinstance(b, Bullets):
            out += [f"- {item}" for item in b.items] + [""]
        elif isinstance(b, Table):
            out.append("| " + " | ".join(_md_cell(h) for h in b.headers) + " |")
            out.append("|" + "|".join("---" for _ in b.headers) + "|")
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            out.append("")
        elif isinstance(b, Image):
            out += [f"![{b.alt}]({b.path})", ""]
        else:  # pragma: no cover - the Block union is closed
            raise TypeError(f"unknown block {b!r}")
    return "\n".join(out).rstrip("\n") + "\n"


_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#1a1a1a;line-height:1.45}
h1,h2,h3{line-height:1.2}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3}tr:nth-child(even) td{background:#fafafa}
code{background:#f3f3f3;padding:0 .2em;border-radius:3px}
figure{margin:1em 0}img{max-width:100%;border:1px solid #eee}figcaption{font-size:.85em;color:#555}
.verdict{display:inline-block;padding:0 .45em;border-radius:.7em;color:#fff;font-size:.92em;white-space:nowrap}
.v-held{background:#2e7d32}.v-not-held{background:#c62828}.v-inconclusive{background:#6d6d6d}
.v-borderline{background:#e65100}.v-not-evaluated{background:#fff;color:#555;border:1px solid #999}
""".strip()
VERDICTS = (HELD, NOT_HELD, INCONCLUSIVE, BORDERLINE, NOT_EVALUATED)
"""Bold text that is exactly one of these renders as a coloured verdict badge in HTML."""


def _strong(text: str) -> str:
    if text in VERDICTS:
        return f'<strong class="verdict v-{text.replace(" ", "-")}">{text}</strong>'
    return f"<strong>{text}</strong>"


def _inline_html(text: str) -> str:
    escaped = html.escape(text, quote=False)
    escaped = _CODE.sub(lambda m: f"<code>{m.group(1)}</code>", escaped)
    return _BOLD.sub(lambda m: _strong(m.group(1)), escaped)


def render_html(blocks: Sequence[Block], base_dir: str | os.PathLike[str], title: str = "SUPO results") -> str:
    """The blocks as one self-contained HTML page: inline CSS, figures embedded as base64 PNG data URIs (read from
    ``base_dir``)."""
    base = Path(base_dir)
    body: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            body.append(f"<h{b.level}>{_inline_html(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            body.append(f"<p>{_inline_html(b.text)}</p>")
        elif isinstance(b, Bullets):
            body.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{_inline_html(h)}</th>" for h in b.headers)
            rows = "".join("<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in row) + "</tr>" for row in b.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(b, Image):
            data = base64.b64encode((base / b.path).read_bytes()).decode("ascii")
            alt = html.escape(b.alt)
            body.append(f'<figure><img alt="{alt}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{alt}</figcaption></figure>")
        else:  # pragma: no cover
            raise TypeError(f"unknown block {b!r}")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>\n{_CSS}\n</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


__all__ = ["Block", "Bullets", "DASH", "Heading", "Image", "Para", "Table", "render_html", "render_markdown"]
