#!/usr/bin/env bash
# Install everything the tests need and run them: the README's test command, and what CI runs.
#   bash scripts/test.sh            # all tests
#   bash scripts/test.sh -k upload  # extra arguments go to pytest
# As root (CI) it also installs the Debian packages and starts the one-host SLURM cluster the SLURM tests
# submit to; elsewhere those tests skip with a reason.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ]; then
    need=()
    command -v sbatch >/dev/null || need+=(slurm-wlm munge)
    command -v chromium >/dev/null || need+=(chromium)
    if [ ${#need[@]} -gt 0 ]; then
        echo "[test] apt-get install ${need[*]}"
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
    fi
    bash tests/slurm/up.sh   # the one-host SLURM cluster the SLURM tests submit to
fi
bash scripts/setup.sh
. .venv/bin/activate
set +e
# Two pytest workers (pyproject.toml's addopts). The 25 slowest tests are printed, to keep the suite inside CI's
# 90-minute window.
python -m pytest -ra --durations=25 "$@"
rc=$?
set -e
if [ $rc = 5 ]; then
    echo "[test] pytest collected no tests: failing, since a test run that tests nothing is a broken run" >&2
    exit 1
fi
exit $rc
