#!/usr/bin/env bash
# Download the wheels that verl 0.9.1 needs on the lent GPU machine (which has torch 2.11, transformers,
# pyarrow, peft, accelerate but no verl/Ray/hydra/liger and no network) into the ignored folder .whl/.
# The set is the one recorded in ../shared/docs/verl-on-the-gpu-machine.md (about 57 MiB). Ray's wheel (79 MB)
# is over the 64 MiB carry limit, so it is unpacked and slimmed to .whl/ray-slim.tar.xz; with --ppo the Ray
# binaries that a running Ray cluster needs (raylet, gcs_server) are kept. wandb (20 MB) is left out: the
# project logs with console+file, and verl imports wandb only for its wandb logger.
#   bash scripts/gpu/prepare_wheels.sh [--ppo]      (run here, with network; then carry .whl in `run`)
set -euo pipefail
cd "$(dirname "$0")/../.."
PPO=0; [[ "${1:-}" == "--ppo" ]] && PPO=1
PY=${PY:-.venv/bin/python}
DEST=.whl
mkdir -p "$DEST" .git/info
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude

PLAT=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_24_x86_64
      --platform manylinux_2_31_x86_64 --platform manylinux_2_34_x86_64 --platform manylinux_2_35_x86_64)
# One version of each, pinned to what the CPU lock uses (requirements/lock-cpu.txt) where it has them.
PKGS=(
  verl==0.9.1 transformers==5.9.0 tokenizers==0.22.2 hydra-core==1.3.8 omegaconf==2.3.1
  codetiming==1.4.0 tensordict==0.10.0 pyvers==0.1.0 torchdata==0.11.0 dill==0.4.1 multiprocess==0.70.19
  datasets==5.2.0 TransferQueue==0.1.11 msgspec==0.22.0 pyzmq==27.3.0 uvicorn==0.54.0 fastapi==0.136.3
  starlette==1.10.0 python-multipart==0.0.34 pydantic==2.14.3 pydantic-core==2.50.4 annotated-types==0.8.0
  typing-inspection==0.4.5 jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0
  rpds-py==2026.9.1 importlib-metadata==10.2.0 orjson==3.13.0 platformdirs==4.14.7 colorful==0.5.8
  cwevals==0.0.1b1 opentelemetry-api==1.45.2 opentelemetry-sdk==1.45.2 opentelemetry-proto==1.45.2
  opentelemetry-exporter-otlp-proto-http==1.45.2 opentelemetry-exporter-otlp-proto-common==1.45.2
  opentelemetry-semantic-conventions==0.66b2 liger-kernel==0.8.5 watchfiles==1.3.0 sniffio==1.3.1
)
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLAT[@]}" \
  -d "$DEST" "${PKGS[@]}"
# Two packages ship only as sdists: build pure-Python wheels from them here.
for sdist in antlr4-python3-runtime==4.9.3 pylatexenc==2.11; do
  ls "$DEST"/"${sdist%%=*}"*.whl "$DEST"/"$(echo "${sdist%%=*}" | tr - _)"*.whl >/dev/null 2>&1 ||
    "$PY" -m pip wheel -q --no-deps -w "$DEST" "$sdist"
done
rm -f "$DEST"/wandb-*.whl

# Ray, slimmed: the SFT trainer only imports ray; PPO starts a cluster and needs raylet + gcs_server.
if [[ ! -f "$DEST/ray-slim.tar.xz" || -n "${REBUILD_RAY:-}" ]]; then
  tmp=$(mktemp -d)
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLAT[@]}" \
    -d "$tmp" ray==2.60.0
  (cd "$tmp" && unzip -q ray-*.whl -x 'ray/jars/*' 'ray/rllib/*' 'ray/dashboard/client/*' && rm ray-*.whl)
  if [[ $PPO == 0 ]]; then rm -f "$tmp"/ray/core/src/ray/raylet/raylet "$tmp"/ray/core/src/ray/gcs/gcs_server; fi
  tar -C "$tmp" -cJf "$DEST/ray-slim.tar.xz" .
  rm -rf "$tmp"
fi
ls "$DEST" | wc -l; du -sh "$DEST"
