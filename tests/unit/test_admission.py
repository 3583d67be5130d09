"""Who may come in: tokens that never crash, rationed identities, origins, stored secrets, the catalogue."""
from __future__ import annotations

import os
import stat

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.identity import issue_token, verify_token
from core.ratelimit import KeyedRateLimiter
from core.validation import is_allowed_origin, normalize_origin
from gateway.articles import Article
from gateway.catalogue import Catalogue, EmbeddedArticles, article_to_json, parse_article_record
from gateway.config import GatewayConfig, read_or_create_secret

SECRET = b"test-secret"


# -- tokens ------------------------------------------------------------------------------------


@given(st.text(max_size=200))
def test_verify_token_never_raises_on_any_text(token):
    assert verify_token(SECRET, token) in (None, token.partition(".")[0])


@given(st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True), st.text(max_size=60))
def test_a_valid_user_with_any_signature_text_is_refused_unless_signed(user, signature):
    genuine = issue_token(SECRET, user)
    token = f"{user}.{signature}"
    assert verify_token(SECRET, token) == (user if token == genuine else None)


def test_non_ascii_and_malformed_signatures_are_unauthenticated():
    genuine = issue_token(SECRET, "alice")
    for forged in ["alice.é", "alice.\ud800", "alice." + "é" * 43, genuine + "x", genuine[:-1], "alice.", ".sig"]:
        assert verify_token(SECRET, forged) is None
    assert verify_token(SECRET, b"alice.sig") is None  # not text at all
    assert verify_token(SECRET, genuine) == "alice"


# -- the per-address limiter ------------------------------------------------------------------


def test_each_address_gets_its_burst_then_the_rate():
    limiter = KeyedRateLimiter(rate=1 / 60, burst=3, max_keys=100)  # one a minute
    assert [limiter.take("10.0.0.1", 0) for _ in range(4)] == [True, True, True, False]
    assert limiter.take("10.0.0.2", 0) is True  # another address has its own allowance
    assert limiter.take("10.0.0.1", 59_000) is False
    assert limiter.take("10.0.0.1", 60_000) is True
    assert limiter.take("10.0.0.1", 60_000) is False


def test_the_limiter_holds_at_most_max_keys_and_forgets_the_least_recently_used():
    limiter = KeyedRateLimiter(rate=1 / 60, burst=1, max_keys=3)
    for address in ["a", "b", "c"]:
        assert limiter.take(address, 0) is True
    assert limiter.take("a", 1) is False  # "a" is now the most recently used
    assert limiter.take("d", 2) is True  # evicts "b", the least recently used
    assert len(limiter) == 3
    assert limiter.take("a", 3) is False  # still remembered: still limited
    assert limiter.take("c", 3) is False
    assert limiter.take("b", 4) is True  # forgotten, so a fresh allowance (and "d" is evicted)
    for index in range(10_000):
        limiter.take(f"10.{index}", 5)
    assert len(limiter) == 3


# -- origins ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origins", "host", "allowed", "expected"),
    [
        ([], "127.0.0.1:8000", frozenset(), True),  # not a browser
        (["http://127.0.0.1:8000"], "127.0.0.1:8000", frozenset(), True),  # the gateway's own page
        (["https://Claps.Example.com"], "claps.example.com", frozenset(), True),
        (["http://127.0.0.1:8000/"], "127.0.0.1:8000", frozenset(), True),
        (["https://evil.example"], "127.0.0.1:8000", frozenset(), False),
        (["http://127.0.0.1:8001"], "127.0.0.1:8000", frozenset(), False),  # another port is another origin
        (["null"], "127.0.0.1:8000", frozenset(), False),
        (["ftp://127.0.0.1:8000"], "127.0.0.1:8000", frozenset(), False),
        (["http://127.0.0.1:8000"], None, frozenset(), False),  # no single Host to compare with
        (["https://news.example"], "gw-3.internal:8000", frozenset({"https://news.example"}), True),
        (["https://news.example", "https://news.example"], "x", frozenset({"https://news.example"}), False),
    ],
)
def test_websocket_origins(origins, host, allowed, expected):
    assert is_allowed_origin(origins, host, allowed) is expected


def test_allowed_origins_come_from_the_environment_normalized():
    config = GatewayConfig.from_env({"CLAP_ALLOWED_ORIGINS": " https://News.example/ ,https://b.example,, "})
    assert config.allowed_origins == frozenset({"https://news.example", "https://b.example"})
    assert normalize_origin("HTTPS://A.example/") == "https://a.example"


# -- stored credentials -------------------------------------------------------------------------


def test_a_generated_secret_is_private_and_survives_a_restart(tmp_path):
    path = tmp_path / "data" / "secret"
    first = read_or_create_secret(path)
    assert len(first) >= 40
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert read_or_create_secret(path) == first
    assert [p.name for p in path.parent.iterdir()] == ["secret"]  # no temporary left behind


def test_embedded_mode_keeps_its_secret_and_admin_token_in_the_data_directory(tmp_path):
    env = {"CLAP_MODE": "embedded", "CLAP_DATA_DIR": str(tmp_path)}
    first = GatewayConfig.from_env(env).with_stored_credentials()
    again = GatewayConfig.from_env(env).with_stored_credentials()
    assert first.secret and first.secret == again.secret
    assert first.admin_token and first.admin_token == again.admin_token != first.secret.decode()
    assert (tmp_path / "secret").read_text().strip().encode() == first.secret
    given = GatewayConfig.from_env({**env, "CLAP_SECRET": "deployed", "CLAP_ADMIN_TOKEN": "adm"}).with_stored_credentials()
    assert (given.secret, given.admin_token) == (b"deployed", "adm")


def test_distributed_mode_needs_a_shared_secret(tmp_path):
    with pytest.raises(SystemExit, match="CLAP_SECRET"):
        GatewayConfig.from_env({"CLAP_MODE": "distributed", "CLAP_DATA_DIR": str(tmp_path)}).with_stored_credentials()
    assert not list(tmp_path.iterdir())


# -- the catalogue ------------------------------------------------------------------------------


def test_article_records_parse_and_tombstones_remove():
    catalogue = Catalogue([Article("a", "A")])
    catalogue.apply(*parse_article_record(b"b", orjson.dumps({"id": "b", "title": "B"})))
    assert catalogue.get("b") == Article("b", "B")
    catalogue.apply(*parse_article_record(b"a", None))
    assert "a" not in catalogue and len(catalogue) == 1
    assert parse_article_record(b"c", article_to_json(Article("c", "C", "body"))) == ("c", Article("c", "C", "body"))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (None, b'{"id":"a","title":"A"}'),
        (b"a b", None),
        (b"\xff", None),
        (b"a", b"not json"),
        (b"a", b'{"id":"b","title":"B"}'),  # key and id disagree
        (b"a", b'{"id":"a"}'),
        (b"a", b'{"id":"a","title":""}'),
        (b"a", b'{"id":"a","title":"A","body":7}'),
        (b"a", b"[]"),
    ],
)
def test_malformed_article_records_are_refused(key, value):
    with pytest.raises(ValueError):
        parse_article_record(key, value)


async def test_embedded_articles_are_journalled_and_survive_a_restart(tmp_path):
    path = tmp_path / "articles.jsonl"
    admin = EmbeddedArticles(Catalogue([Article("seeded", "S")]), path)
    await admin.put(Article("x1", "X one"))
    await admin.put(Article("x2", "X two"))
    await admin.remove("seeded")
    with open(path, "ab") as journal:
        journal.write(b'{"id":"torn","ti')  # a crash mid-write
    restarted = EmbeddedArticles(Catalogue([Article("seeded", "S")]), path)
    assert restarted.load() == 3
    assert sorted(a.id for a in restarted.catalogue.articles()) == ["x1", "x2"]
    await restarted.put(Article("x3", "X three"))
    again = EmbeddedArticles(Catalogue(), path)
    assert again.load() == 4
    assert sorted(a.id for a in again.catalogue.articles()) == ["x1", "x2", "x3"]


def test_article_records_match_the_published_schema():
    import schemas
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(schemas.load("article.v1"))
    Draft202012Validator.check_schema(schemas.load("article.v1"))
    validator.validate(orjson.loads(article_to_json(Article("a", "A", "body"))))
    validator.validate(orjson.loads(article_to_json(Article("b", "B"))))
    assert list(validator.iter_errors({"id": "a b", "title": ""}))
