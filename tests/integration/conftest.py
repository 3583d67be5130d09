from tests.support.pipeline import pipeline  # noqa: F401  (the session-wide distributed deployment)
