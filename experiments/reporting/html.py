"""A Markdown report as one self-contained HTML page: its tables styled, its plots embedded as data URIs, no
network needed to read it."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from markdown_it import MarkdownIt

from infer_core.measure.files import write_text_atomic

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1200px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1, h2, h3, h4 { line-height: 1.2; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: .9em; display: block; overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: left; vertical-align: top; }
th { background: #f3f4f6; position: sticky; top: 0; } tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; height: auto; border: 1px solid #eee; margin: .5em 0; }
code { background: #f3f4f6; padding: 0 .2em; border-radius: 3px; } pre { background: #f3f4f6; padding: .8em; }
"""


def _embed(folder: Path, match: re.Match) -> str:
    """An ``<img src="file.png">`` with the file's bytes in the page (left as is when the file is missing)."""
    path = folder / html.unescape(match.group(2))
    if not path.is_file():
        return match.group(0)
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'{match.group(1)}data:image/png;base64,{data}{match.group(3)}'


def write_html(md_path: Path) -> Path:
    """``report.md`` -> ``report.html`` beside it (the same for ``compare.md``); returns the page's path."""
    text = md_path.read_text()
    title = next((line[2:].strip() for line in text.splitlines() if line.startswith("# ")), md_path.stem)
    body = MarkdownIt("commonmark").enable("table").render(text)  # twice as fast as Python-Markdown on a long table
    body = re.sub(r'(<img[^>]*?src=")([^"]+)(")', lambda m: _embed(md_path.parent, m), body)
    page = (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")
    return write_text_atomic(md_path.with_suffix(".html"), page)
