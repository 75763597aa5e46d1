#!/usr/bin/env bash
# Build everything PPO needs on the lent GPU machine (no network there) into chunks small enough to carry, one
# chunk a `run` call (../shared/docs/vllm-on-the-gpu-machine.md, docs/gpu.md "PPO on the lent H200"):
#   1. the verl wheel set with a Ray that can run a cluster (prepare_wheels.sh --ppo)
#   2. vLLM 0.24.0's CUDA wheel, unpacked and slimmed from 637 MB to ~294 MB (kernels this GPU never runs)
#   3. vLLM's Python dependencies that the machine's image lacks
# then tar | xz | split into .gpu/payload/payload.tar.xz.part-* (50 MB each) + payload.sha256.
#   bash scripts/gpu/prepare_payload.sh           (here, with network; about 5 minutes on 2 cores)
# On the machine: scripts/gpu/run_on_device.sh receive (once per chunk), then install.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
OUTDIR=.gpu/payload
STAGE=.gpu/payload-build
CHUNK=${CHUNK:-50M}

bash scripts/gpu/prepare_wheels.sh --ppo
rm -rf "$STAGE" && mkdir -p "$STAGE/wheels" "$STAGE/vllm" "$OUTDIR"
cp .whl/*.whl .whl/ray-slim.tar.xz "$STAGE/wheels/"

PLAT=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_24_x86_64
      --platform manylinux_2_31_x86_64 --platform manylinux_2_34_x86_64 --platform manylinux_2_35_x86_64)
download() { "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${PLAT[@]}" -d "$1" "${@:2}"; }

# vLLM's dependencies missing from the machine's image (its package list: /work/.library/device/KINDS.md), at the
# CPU lock's versions where it has them. Deliberately absent: flashinfer-cubin, tilelang, nvidia-cutlass-dsl,
# quack-kernels, fastsafetensors (optional kernels), wandb (not carried: the GPU runs log to console + file).
DEPS=(
  cachetools==8.0.1 blake3==1.0.11 openai==3.54.0 httpx2==2.16.2 httpcore2==2.16.2 truststore==0.10.5
  prometheus-fastapi-instrumentator==8.1.0 lm-format-enforcer==0.11.3 interegular==0.3.3 llguidance==1.7.6
  outlines-core==0.2.14 diskcache==5.6.3 lark==1.2.2 partial-json-parser==0.2.1.1.post7 mistral-common==1.13.1
  pycountry==26.2.16 pydantic-extra-types==2.11.1 compressed-tensors==0.17.0 loguru==0.7.3 depyf==0.20.0
  astor==0.8.1 python-json-logger==4.2.0 pybase64==1.5.1 cbor2==6.3.0 ijson==3.6.0 setproctitle==1.3.8
  openai-harmony==0.0.8 anthropic==2.12.0 distro==1.9.0 jiter==0.19.0 docstring-parser==0.18.0
  model-hosting-container-standards==0.1.16 jmespath==1.1.0 supervisor==4.3.0 mcp==2.3.0 mcp-types==2.3.0 httpx-sse pydantic-settings==2.16.3
  python-dotenv==1.2.4 sse-starlette==3.7.0 pyjwt==2.15.1 email-validator==2.4.0 dnspython==2.9.2 gguf
  websockets==17.4 httptools==0.9.0 opentelemetry-exporter-otlp==1.45.2
  opentelemetry-exporter-otlp-proto-grpc==1.45.2 opentelemetry-exporter-prometheus==0.66b2
  opentelemetry-semantic-conventions-ai==0.5.1 flashinfer-python==0.6.12
  # xgrammar 0.2.9 calls load_lib_module(extra_lib_paths=...), which only tvm-ffi >= 0.1.15 has (vLLM pins 0.1.9)
  xgrammar==0.2.9 apache-tvm-ffi==0.1.15.post2
)
download "$STAGE/wheels" "${DEPS[@]}"

# vLLM itself, unpacked and slimmed. Kept: _C_stable_libtorch (imported unconditionally), _vllm_fa3_C (Hopper
# flash attention), the dist-info (verl reads vLLM's version from it).
tmp=$(mktemp -d)
download "$tmp" vllm==0.24.0
(cd "$STAGE/vllm" && unzip -q "$tmp"/vllm-*.whl)
rm -rf "$tmp"
(cd "$STAGE/vllm" && rm -rf vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so vllm/_moe_C_stable_libtorch.abi3.so \
  vllm/vllm-rs vllm/third_party/deep_gemm vllm/third_party/fmha_sm100)

rm -f "$OUTDIR"/payload.tar.xz.part-*
tar -C "$STAGE" -cf - wheels vllm | xz -T2 -6 | split -b "$CHUNK" - "$OUTDIR/payload.tar.xz.part-"
(cd "$OUTDIR" && cat payload.tar.xz.part-* | sha256sum | cut -d' ' -f1 > payload.sha256)
rm -rf "$STAGE"
ls -la "$OUTDIR"; du -sh "$OUTDIR"
