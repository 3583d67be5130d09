"""The reader pages. Server-rendered so the count at load is the durable one."""
from __future__ import annotations

from collections.abc import Sequence
from html import escape

from core.messages import CountChanged
from gateway.articles import Article

_HEAD = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title><link rel="stylesheet" href="/static/style.css"></head>
<body><main>"""
_FOOT = "</main></body></html>"


def index_page(
    listed: Sequence[tuple[Article, CountChanged | None]], page: int = 1, pages: int = 1, gateways: Sequence[str] = ()
) -> str:
    """One page of the catalogue with each article's total (None: the store could not say; the
    live total fills it in). Its script follows the totals live over one websocket."""
    items = []
    for article, total in listed:
        position = f'data-total="{total.total}" data-seq="{total.seq}" data-epoch="{total.epoch}"' if total else ""
        shown = str(total.total) if total else "&ndash;"
        items.append(
            f'<li data-article="{escape(article.id)}" {position}>'
            f'<a href="/articles/{escape(article.id)}">{escape(article.title)}</a>'
            f'<span class="stats"><span class="claps-total">{shown}</span> claps'
            f'<span class="reading"></span></span></li>'
        )
    nav = []
    if page > 1:
        nav.append(f'<a rel="prev" href="/?page={page - 1}">&larr; newer</a>')
    if pages > 1:
        nav.append(f"<span>page {page} of {pages}</span>")
    if page < pages:
        nav.append(f'<a rel="next" href="/?page={page + 1}">more &rarr;</a>')
    return (
        _HEAD.format(title="Articles")
        + f'<h1>Articles</h1><ul id="articles" class="articles" data-gateways="{escape(" ".join(gateways))}">'
        + "".join(items)
        + "</ul>"
        + (f'<nav class="pages">{" ".join(nav)}</nav>' if nav else "")
        + '<p id="status" class="status">connecting&hellip;</p><script src="/static/index.js"></script>'
        + _FOOT
    )


def article_page(article: Article, total: CountChanged, gateways: Sequence[str] = ()) -> str:
    """``gateways``: the base URLs the script connects to, in turn after each close (empty: this origin)."""
    return (
        _HEAD.format(title=escape(article.title))
        + f"""<p><a href="/">&larr; all articles</a></p>
<article id="article" data-article="{escape(article.id)}"
  data-total="{total.total}" data-seq="{total.seq}" data-epoch="{total.epoch}"
  data-gateways="{escape(" ".join(gateways))}">
<h1>{escape(article.title)}</h1>
<p class="body">{escape(article.body)}</p>
<div class="claps">
  <button id="clap" type="button" aria-label="Clap for this article">&#128079;</button>
  <span class="total" aria-live="polite" aria-atomic="true"><span id="count">{total.total}</span>
    <span class="visually-hidden">claps</span></span>
  <span id="counting" class="counting" aria-live="polite"
    title="Claps are saved; the count moves again once counting has caught up."></span>
  <span id="burst" class="burst" aria-hidden="true"></span>
  <span id="mine" class="mine" aria-live="polite"></span>
  <button id="undo" type="button" class="undo" disabled>Undo my claps</button>
</div>
<p class="activity"><span id="reading" class="reading"></span> <span id="minute" class="minute"></span></p>
<p id="status" class="status">connecting&hellip;</p>
</article>
<script src="/static/app.js"></script>"""
        + _FOOT
    )


def unavailable_page(article: Article) -> str:
    return (
        _HEAD.format(title=escape(article.title))
        + f"""<p><a href="/">&larr; all articles</a></p>
<h1>{escape(article.title)}</h1>
<p class="status">The clap count cannot be read right now. Reload in a few seconds.</p>"""
        + _FOOT
    )
