#!/usr/bin/env bash
# Build llama.cpp's command-line tools from the llama-cpp-python source distribution on PyPI (it vendors
# llama.cpp under vendor/llama.cpp) and cache them outside the repository, where benchmarks/exports_in_runtimes.py
# and CI look for them. About 20 minutes on 2 cores; rerunning with a complete cache does nothing.
#   usage: benchmarks/build_llamacpp.sh [PREFIX]   (default ~/.cache/moe-advisor/llama.cpp)
set -euo pipefail
PREFIX="${1:-$HOME/.cache/moe-advisor/llama.cpp}"
SRC_CACHE="${LLAMACPP_SRC_CACHE:-$HOME/.cache/moe-advisor/llama-cpp-python-src}"
JOBS="${JOBS:-2}"
PY="${PYTHON:-python3}"
TOOLS=(llama-quantize llama-gguf llama-diffusion-cli)

if [[ -f "$PREFIX/BUILD_OK" ]]; then echo "llama.cpp tools already cached in $PREFIX"; exit 0; fi
command -v cmake >/dev/null || { echo "cmake is missing: apt-get install -y cmake" >&2; exit 2; }
command -v ninja >/dev/null || { echo "ninja is missing: apt-get install -y ninja-build" >&2; exit 2; }

mkdir -p "$SRC_CACHE"
sdist=$(ls "$SRC_CACHE"/llama_cpp_python-*.tar.gz 2>/dev/null | tail -n1 || true)
if [[ -z "$sdist" ]]; then
  "$PY" -m pip download -q --no-deps --no-binary :all: llama-cpp-python -d "$SRC_CACHE"
  sdist=$(ls "$SRC_CACHE"/llama_cpp_python-*.tar.gz | tail -n1)
fi
version=$(basename "$sdist" .tar.gz); version=${version#llama_cpp_python-}
tar -xzf "$sdist" -C "$SRC_CACHE"
LLAMA="$SRC_CACHE/llama_cpp_python-$version/vendor/llama.cpp"

BUILD="$SRC_CACHE/build-$version"
cmake -S "$LLAMA" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DLLAMA_CURL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DBUILD_SHARED_LIBS=OFF
cmake --build "$BUILD" -j "$JOBS" --target "${TOOLS[@]}"

# The cache: the tools, the converter with the gguf-py package it imports, and what was built from what.
rm -rf "$PREFIX"; mkdir -p "$PREFIX/bin"
for t in "${TOOLS[@]}"; do cp "$BUILD/bin/$t" "$PREFIX/bin/"; done
cp "$LLAMA"/convert_hf_to_gguf.py "$PREFIX/"
[[ -d "$LLAMA/conversion" ]] && cp -r "$LLAMA/conversion" "$PREFIX/"
cp -r "$LLAMA/gguf-py" "$PREFIX/gguf-py"
printf 'llama-cpp-python %s\n' "$version" > "$PREFIX/VERSION"
touch "$PREFIX/BUILD_OK"
echo "llama.cpp tools from llama-cpp-python $version cached in $PREFIX"
