"""One module per command: ``register`` (its parser) and ``main`` (its run, an exit status).

What they share lives in ``_common``; the command line (``notifier.cli``) takes from here the
parser class and the exit statuses.
"""

from notifier.commands._common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, Parser

__all__ = ["EXIT_FAILURE", "EXIT_OK", "EXIT_USAGE", "Parser"]
