"""``python -m notifier``."""

from notifier.cli import run

if __name__ == "__main__":
    run()
