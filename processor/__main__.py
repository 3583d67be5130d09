"""python -m processor worker -l info: run one Faust worker of the clap processor."""
import asyncio
import sys
from concurrent.futures import ThreadPoolExecutor

from processor.app import app, config
from processor.membership import broker_session_floor_ms, session_refused
from processor.topics import ensure_changelog_topics

if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        # Before Faust starts: the first metadata request for a missing changelog topic would
        # have the broker auto-create it with its default partition count. (A thread of its own
        # keeps this event loop apart from the one Faust runs in.)
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, ensure_changelog_topics(config)).result()
            floor_ms = pool.submit(asyncio.run, broker_session_floor_ms(config.kafka_bootstrap)).result()
        refused = session_refused(config.session_timeout_s, floor_ms)
        if refused:
            sys.exit(f"processor: {refused}")
    if config.log_format == "json" and "--quiet" not in sys.argv:
        # Faust prints a banner table beside its log; JSON logs must be nothing but JSON lines.
        # --quiet silences only that console output, not the log.
        sys.argv.insert(1, "--quiet")
    app.main()
