"""The Faust processor: per-user cap, idempotency and windowed, numbered totals per article."""
