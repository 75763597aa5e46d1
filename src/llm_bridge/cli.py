"""`llm-bridge`: small helpers around the workflow (the pipeline itself runs through `snakemake`).

    llm-bridge provenance runs/tiny/merged_model   # what produced this artifact, back to the raw data
    llm-bridge status [runs/tiny]                  # each stage: done / stale (and why) / not run / running
"""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return
    if argv[0] == "provenance":
        from llm_bridge import provenance

        provenance.main(["show", *argv[1:]])
        return
    if argv[0] == "status":
        from llm_bridge import status

        status.main(argv[1:])
        return
    sys.exit(f"llm-bridge: unknown command {argv[0]!r}; see llm-bridge --help")


if __name__ == "__main__":
    main()
