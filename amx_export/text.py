"""Evaluation text: a file of the user's, or real English Wikipedia prose that installs offline.

The ``gensim`` wheel carries an extract of English Wikipedia (206 articles as MediaWiki XML);
``gensim.corpora.wikicorpus`` strips the markup, leaving about 2.9 MB of prose.
"""

from __future__ import annotations

import bz2
import importlib.util
from pathlib import Path

from .errors import UserError

WIKIPEDIA = "wikipedia"  # the --text value that names the bundled extract
WIKI_DUMP = "test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
MIN_ARTICLE_CHARS = 500  # skips redirects and stubs


def wikipedia_dump() -> Path:
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the bundled Wikipedia text needs gensim: pip install gensim")
    path = Path(spec.submodule_search_locations[0]) / WIKI_DUMP
    if not path.exists():
        raise UserError(f"{path}: missing from this gensim install")
    return path


def wikipedia_text() -> str:
    """Plain prose of the gensim Wikipedia extract, articles separated by blank lines."""
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki

    articles = []
    with bz2.open(wikipedia_dump(), "rb") as dump:
        for title, markup, _ in extract_pages(dump):
            prose = _tidy(filter_wiki(markup))
            if len(prose) >= MIN_ARTICLE_CHARS:
                articles.append(f"{title}\n\n{prose}")
    return "\n\n".join(articles)


def _tidy(text: str) -> str:
    """Plain lines: no emphasis quotes or heading marks, no table debris or blank lines."""
    text = text.replace("'''", "").replace("''", "")
    lines = (line.strip().strip("=").strip() for line in text.splitlines())
    return "\n".join(line for line in lines if len(line) > 1 and not line.startswith(("|", "!")))


def load_text(source: str | Path) -> str:
    """The text of ``source``: ``wikipedia`` for the bundled extract, or a UTF-8 file."""
    if str(source) == WIKIPEDIA:
        return wikipedia_text()
    path = Path(source)
    if not path.is_file():
        raise UserError(f"{path}: no such text file (or use --text {WIKIPEDIA})")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    if not text.strip():
        raise UserError(f"{path}: the file is empty")
    return text
