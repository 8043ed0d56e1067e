#!/usr/bin/env bash
# Build llama-cpp-python once per machine as a portable CPU wheel, then install it.
#
# Why: pip's default source build targets the build machine's exact CPU (GGML_NATIVE),
# which on some virtual machines enables AMX kernels that crash, and a cached native
# wheel can crash with SIGILL on another CPU. This builds for x86-64 with AVX2 instead
# and keeps the wheel under a key of its build flags, so later runs install in seconds.
#
# Usage: scripts/install-engine.sh [python]
# GPU:   LLMUX_CMAKE_ARGS="-DGGML_CUDA=on" scripts/install-engine.sh   (see docs/gpu.md)
set -euo pipefail
PY=${1:-python3}
VERSION=${LLMUX_LLAMA_CPP_VERSION:-0.3.36}
DEFAULT_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_BF16=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"
ARGS=${LLMUX_CMAKE_ARGS:-$DEFAULT_ARGS}
KEY=$(printf '%s %s %s' "$VERSION" "$ARGS" "$("$PY" -c 'import sys; print(sys.version_info[:2])')" | sha256sum | cut -c1-16)
DIR=${LLMUX_WHEEL_CACHE:-$HOME/.cache/llmux/wheels}/$KEY
PKG_DIR=$("$PY" -c 'import importlib.util as u; s = u.find_spec("llama_cpp"); print(s.submodule_search_locations[0] if s else "")' 2>/dev/null || true)
if [ -n "$PKG_DIR" ] && [ "$(cat "$PKG_DIR/.llmux-build" 2>/dev/null)" = "$KEY" ]; then
  echo "llama-cpp-python $VERSION already installed (build $KEY)"
  exit 0
fi
if ! ls "$DIR"/llama_cpp_python-"$VERSION"-*.whl >/dev/null 2>&1; then
  echo "Building llama-cpp-python $VERSION (one time per machine, several minutes on 2 cores)..."
  mkdir -p "$DIR"
  CMAKE_ARGS="$ARGS" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
    "$PY" -m pip wheel --no-cache-dir --no-deps "llama-cpp-python==$VERSION" -w "$DIR"
fi
"$PY" -m pip install --quiet --force-reinstall --no-deps "$DIR"/llama_cpp_python-"$VERSION"-*.whl
"$PY" -m pip install --quiet "$DIR"/llama_cpp_python-"$VERSION"-*.whl  # its own dependencies
PKG_DIR=$("$PY" -c 'import importlib.util as u; print(u.find_spec("llama_cpp").submodule_search_locations[0])')
echo "$KEY" > "$PKG_DIR/.llmux-build"
echo "llama-cpp-python $VERSION installed (build $KEY)"
