"""Which article each reader opens: one hot article plus a long Zipf tail, as a platform sees it."""
from __future__ import annotations

import bisect
import itertools
import random
import secrets
import time
from dataclasses import dataclass
from functools import cached_property


def run_prefix() -> str:
    """A fresh article-id prefix per run, so every run starts from totals of zero."""
    return f"lt{time.strftime('%H%M%S')}{secrets.token_hex(2)}"


@dataclass(frozen=True)
class ArticleMix:
    """``articles`` article ids ``{prefix}-0`` (the hot one) .. ``{prefix}-{articles-1}``.

    A reader opens the hot article with probability ``hot_share``; otherwise a tail article drawn
    from Zipf(``zipf_s``). With ``cover_all`` the first ``articles`` readers take one article
    each, so every article has at least one reader (the platform scenario checks routing for all).
    """

    prefix: str
    articles: int = 1
    hot_share: float = 1.0
    zipf_s: float = 1.0
    cover_all: bool = False
    seed: int = 1

    def article_id(self, index: int) -> str:
        return f"{self.prefix}-{index}"

    @property
    def hot(self) -> str:
        return self.article_id(0)

    @cached_property
    def _tail_cdf(self) -> list[float]:
        weights = [1.0 / (rank ** self.zipf_s) for rank in range(1, self.articles)]
        return list(itertools.accumulate(weights))

    def _tail_index(self, rng: random.Random) -> int:
        cdf = self._tail_cdf
        return 1 + min(bisect.bisect_left(cdf, rng.random() * cdf[-1]), len(cdf) - 1)

    def article_index_for(self, reader: int) -> int:
        """Deterministic in ``reader``, so every process computes the same assignment alone."""
        if self.articles <= 1:
            return 0
        if self.cover_all and reader < self.articles:
            return reader
        rng = random.Random(self.seed * 1_000_003 + reader)
        if rng.random() < self.hot_share:
            return 0
        return self._tail_index(rng)

    def article_for(self, reader: int) -> str:
        return self.article_id(self.article_index_for(reader))

    def pick(self, rng: random.Random) -> str:
        """An article for a clapper, from the same popularity as the readers'."""
        if self.articles <= 1 or rng.random() < self.hot_share:
            return self.hot
        return self.article_id(self._tail_index(rng))
