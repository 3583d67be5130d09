"""python -m processor worker -l info: run one Faust worker of the clap processor."""
from processor.app import app

if __name__ == "__main__":
    app.main()
