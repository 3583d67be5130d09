"""Articles as the clap service knows them, and the demo's seeded ones.

The article catalogue belongs to the publishing platform, not to the clap service: the gateway
accepts claps and joins only for articles the platform has published (gateway/catalogue.py).
These few are seeded so the reader pages have something to show: embedded mode starts with
them, and in distributed mode ``processor.topics`` publishes them when it creates the topic.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Article:
    id: str
    title: str
    body: str = ""


SEEDED = (
    Article(
        "why-logs-win",
        "Why the log wins",
        "Every durable system eventually rediscovers the append-only log. Tables are a cache of "
        "the log; the log is the truth. When a count goes wrong, you replay the log and the "
        "count is right again.",
    ),
    Article(
        "counting-at-scale",
        "Counting at scale is a batching problem",
        "Ten thousand readers clapping on one article is not ten thousand writes: it is one "
        "write per window. Coalesce first, then make the one write idempotent.",
    ),
    Article(
        "slow-readers",
        "Slow readers must not hurt fast ones",
        "A reader on a bad train connection should get the latest number when the tunnel ends, "
        "not every number it missed. Keep the latest, drop the rest.",
    ),
    Article(
        "hello-claps",
        "Hello, claps",
        "Clap below. Open this page in a second tab and watch the number move there too.",
    ),
)

BY_ID = {article.id: article for article in SEEDED}
