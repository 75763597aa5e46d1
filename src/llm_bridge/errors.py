"""One error type for bad input, reported as one clear line instead of a traceback."""
from __future__ import annotations

import sys
from typing import Callable


class InputError(Exception):
    """Bad input (config, data, model folder): the message names the file/field/row and says what to do."""


def run_main(main: Callable[[], object]) -> None:
    try:
        main()
    except InputError as exc:
        print(f"llm-bridge: error: {exc}", file=sys.stderr)
        sys.exit(2)
