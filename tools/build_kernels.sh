#!/usr/bin/env bash
# Configure and build the CUDA sources in kernels/ with CMake + nvcc into build/kernels/.
# Nothing is run on a GPU: this is the CI compile check (and a quick local build for
# EMOSDK_NATIVE_DIR=build/kernels). Exits 0 with a message when nvcc is absent.
#
# Knobs (environment):
#   EMOSDK_CUDA_ARCHS   CMAKE_CUDA_ARCHITECTURES (default "80;86;87;89;90")
#   EMOSDK_BUILD_DIR    build directory (default build/kernels)
#   TENSORRT_ROOT       TensorRT prefix; the plugin (and its build-time test) is built when
#                       NvInfer.h is found there. Unset: the system paths, then TensorRT 10.3's
#                       headers vendored beside the checkout (../shared/vendor/tensorrt-10.3.0),
#                       so CI compiles and tests the plugin without TensorRT installed
#   CMAKE_BUILD_PARALLEL_LEVEL  compile jobs (default 2)
set -euo pipefail
cd "$(dirname "$0")/.."

nvcc_bin="${CUDACXX:-$(command -v nvcc || true)}"
if [ -z "$nvcc_bin" ] && [ -x /usr/local/cuda/bin/nvcc ]; then
  nvcc_bin=/usr/local/cuda/bin/nvcc
fi
if [ -z "$nvcc_bin" ]; then
  echo "build_kernels: nvcc not found (no CUDA toolkit): skipped the CUDA build." \
       "Install the CUDA toolkit or set CUDACXX to build kernels/."
  exit 0
fi
if ! command -v cmake >/dev/null; then
  echo "build_kernels: cmake not found: skipped the CUDA build (install cmake >= 3.22)."
  exit 0
fi

vendored="$(pwd)/../shared/vendor/tensorrt-10.3.0"
if [ -z "${TENSORRT_ROOT:-}" ] && [ ! -f /usr/include/NvInfer.h ] \
   && [ ! -f "/usr/include/$(uname -m)-linux-gnu/NvInfer.h" ] && [ -f "$vendored/include/NvInfer.h" ]; then
  TENSORRT_ROOT="$(cd "$vendored" && pwd)"
  echo "build_kernels: TensorRT headers from $TENSORRT_ROOT (headers only: compile and build-time test)"
fi

build_dir="${EMOSDK_BUILD_DIR:-build/kernels}"
archs="${EMOSDK_CUDA_ARCHS:-80;86;87;89;90}"
echo "build_kernels: $("$nvcc_bin" --version | tail -n 2 | head -n 1)"
echo "build_kernels: CMAKE_CUDA_ARCHITECTURES=$archs -> $build_dir"

cmake -S kernels -B "$build_dir" \
  -DCMAKE_CUDA_COMPILER="$nvcc_bin" \
  -DCMAKE_CUDA_ARCHITECTURES="$archs" \
  -DCMAKE_BUILD_TYPE=Release \
  -DEMOSDK_PTXAS_VERBOSE=ON \
  ${TENSORRT_ROOT:+-DTENSORRT_ROOT="$TENSORRT_ROOT"}
CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" cmake --build "$build_dir"

echo "build_kernels: built:"
ls -1 "$build_dir"/*.so
for exe in sanitize_attention test_attention_plugin; do
  if [ -x "$build_dir/$exe" ]; then echo "$build_dir/$exe"; fi
done
