"""The reader pages. Server-rendered so the count at load is the durable one."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape

from core.messages import CountChanged
from gateway.articles import Article

_HEAD = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title><link rel="stylesheet" href="/static/style.css"></head>
<body><main>"""
_FOOT = "</main></body></html>"


def index_page(seeded: Iterable[Article]) -> str:
    items = "".join(
        f'<li><a href="/articles/{escape(a.id)}">{escape(a.title)}</a></li>' for a in seeded
    )
    return _HEAD.format(title="Articles") + f"<h1>Articles</h1><ul class=\"articles\">{items}</ul>" + _FOOT


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
  <span id="burst" class="burst" aria-hidden="true"></span>
  <span id="mine" class="mine" aria-live="polite"></span>
  <button id="undo" type="button" class="undo" disabled>Undo my claps</button>
</div>
<p class="activity"><span id="minute" class="minute"></span></p>
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
