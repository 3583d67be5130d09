"""python -m processor worker -l info: run one Faust worker of the clap processor."""
import sys

from processor.app import app, config

if __name__ == "__main__":
    if config.log_format == "json" and "--quiet" not in sys.argv:
        # Faust prints a banner table beside its log; JSON logs must be nothing but JSON lines.
        # --quiet silences only that console output, not the log.
        sys.argv.insert(1, "--quiet")
    app.main()
