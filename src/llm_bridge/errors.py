"""Error types reported as one clear line instead of a traceback: bad input, and a failed stage."""
from __future__ import annotations

import sys
from typing import Callable


class InputError(Exception):
    """Bad input (config, data, model folder): the message names the file/field/row and says what to do."""


class StageError(RuntimeError):
    """A stage's child process failed or stalled; the message says so in one sentence and names the full log."""


def run_main(main: Callable[[], object]) -> None:
    try:
        main()
    except InputError as exc:
        print(f"llm-bridge: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except StageError as exc:  # the log's tail is already on the terminal: no traceback on top of it
        print(f"llm-bridge: error: {exc}", file=sys.stderr)
        sys.exit(1)
