#!/usr/bin/env bash
# Compile-check the SGS TensorRT plugin sources against a TensorRT include directory.
#
#   scripts/check_plugin_compile.sh <TensorRT include dir> [cuda include dir]
#
# Checks (nothing is fetched or installed; the headers must already be on disk, e.g. extracted under
# /tmp with `git archive release/10.3 include | tar -x -C /tmp/trt-10.3` from NVIDIA/TensorRT):
#   1. g++ -fsyntax-only -Wall -Wextra -Werror of sgsPlugin.cpp, sgsRegisterStatic.cpp, sgsRegisterDynamic.cpp
#   2. nvcc -c of sgsKernel.cu and sgsHarness.cu (one arch: $ATFR_NVCC_ARCH, default sm_87), if nvcc exists
#   3. links libatfr_sgs.so / libatfr_sgs_vc.so WITHOUT libnvinfer (undefined TensorRT symbols allowed)
#      into a temp dir and checks with nm that the vc library exports exactly the names exports.map lists
#      (getCreators, setLoggerFinder) and that the static one references getPluginRegistry (the registrar);
#   4. builds plugins/sgs/check/sgsRegistryCheck.cpp (a recording IPluginRegistry standing in for
#      libnvinfer) and runs it on both libraries: the static one registers its creator under "atfr", and
#      creator and plugins (build and deserialization phase) report ("SGS", "1", "atfr") of sgsPluginId.h.
# Environment: CXX (default g++), NVCC (default: nvcc on PATH, /usr/local/cuda/bin/nvcc, /usr/local/bin/nvcc),
#              CUDA_INC (default /usr/local/cuda/include), ATFR_NVCC_ARCH (default sm_87),
#              ATFR_SGS_KERNEL_CACHE (optional: reuse the kernel objects across runs of one session).
set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: $0 <TensorRT include dir> [cuda include dir]" >&2
    exit 2
fi
TRT_INC=$(cd "$1" && pwd)
CUDA_INC=${2:-${CUDA_INC:-/usr/local/cuda/include}}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SRC="$HERE/plugins/sgs"
CXX=${CXX:-g++}
ARCH=${ATFR_NVCC_ARCH:-sm_87}
if [[ -z "${NVCC:-}" ]]; then
    for c in "$(command -v nvcc || true)" /usr/local/cuda/bin/nvcc /usr/local/bin/nvcc; do
        if [[ -n "$c" && -x "$c" ]]; then NVCC=$c; break; fi
    done
fi
[[ -f "$TRT_INC/NvInferRuntime.h" ]] || { echo "error: $TRT_INC/NvInferRuntime.h not found" >&2; exit 2; }
[[ -f "$CUDA_INC/cuda_runtime_api.h" ]] || { echo "error: $CUDA_INC/cuda_runtime_api.h not found (pass the CUDA include dir)" >&2; exit 2; }

ver=$(grep -hE '#define (NV_TENSORRT|TRT)_(MAJOR|MINOR|PATCH)(_ENTERPRISE)? ' "$TRT_INC/NvInferVersion.h" | awk '{print $2"="$3}' | tr '\n' ' ')
echo "TensorRT headers: $TRT_INC ($ver)"
OUT=$(mktemp -d /tmp/atfr_sgs_check.XXXXXX)
trap 'rm -rf "$OUT"' EXIT
CXXFLAGS=(-std=c++17 -O2 -Wall -Wextra -Werror -ffp-contract=off -fPIC -I "$SRC" -isystem "$TRT_INC" -isystem "$CUDA_INC")

for f in sgsPlugin.cpp sgsRegisterStatic.cpp sgsRegisterDynamic.cpp; do
    echo "+ $CXX -fsyntax-only ${f}"
    "$CXX" "${CXXFLAGS[@]}" -fsyntax-only "$SRC/$f"
done

if [[ -z "${NVCC:-}" ]]; then
    echo "nvcc not found: skipping the kernel compile and link checks"
    echo "OK (syntax only)"
    exit 0
fi
# The kernels include no TensorRT header: ATFR_SGS_KERNEL_CACHE (a folder kept for one test session,
# which checks several header sets in turn) lets later runs reuse the first run's objects.
KCACHE=${ATFR_SGS_KERNEL_CACHE:-}
for f in sgsKernel sgsHarness; do
    if [[ -n "$KCACHE" && -f "$KCACHE/$f.$ARCH.o" ]]; then
        echo "+ reusing $f.o (-arch=$ARCH) from $KCACHE"
        cp "$KCACHE/$f.$ARCH.o" "$OUT/$f.o"
        continue
    fi
    echo "+ $NVCC -c $f.cu (-arch=$ARCH)"
    "$NVCC" -std=c++17 -O2 -arch="$ARCH" -fmad=false -Xcompiler -fPIC -I "$SRC" -c "$SRC/$f.cu" -o "$OUT/$f.o"
    if [[ -n "$KCACHE" ]]; then mkdir -p "$KCACHE" && cp "$OUT/$f.o" "$KCACHE/$f.$ARCH.o"; fi
done
for f in sgsPlugin sgsRegisterStatic sgsRegisterDynamic; do
    "$CXX" "${CXXFLAGS[@]}" -c "$SRC/$f.cpp" -o "$OUT/$f.o"
done
CUDA_LIB=$(dirname "$CUDA_INC")/lib64
LDFLAGS=(-L "$CUDA_LIB" -Wl,-rpath,"$CUDA_LIB" -lcudart)
"$CXX" -shared -o "$OUT/libatfr_sgs.so" "$OUT/sgsRegisterStatic.o" "$OUT/sgsPlugin.o" "$OUT/sgsKernel.o" "${LDFLAGS[@]}"
"$CXX" -shared -Wl,--version-script="$SRC/exports.map" -o "$OUT/libatfr_sgs_vc.so" \
    "$OUT/sgsRegisterDynamic.o" "$OUT/sgsPlugin.o" "$OUT/sgsKernel.o" "${LDFLAGS[@]}"

# The vc library exports exactly the global names of exports.map (getCreators, setLoggerFinder).
expected=$(sed -n '/global:/,/local:/p' "$SRC/exports.map" | grep -oE '^[[:space:]]*[A-Za-z_][A-Za-z0-9_]*;' \
    | tr -d ' ;' | sort | tr '\n' ' ')
exported=$(nm -D --defined-only "$OUT/libatfr_sgs_vc.so" | awk '$2 ~ /^[TWiu]$/ {print $3}' | sort | tr '\n' ' ')
echo "libatfr_sgs_vc.so exports: $exported(exports.map: $expected)"
[[ -n "$expected" && "$exported" == "$expected" ]] || { echo "error: vc exports differ from exports.map" >&2; exit 1; }
[[ "$expected" == "getCreators setLoggerFinder " ]] \
    || { echo "error: exports.map must list getCreators and setLoggerFinder only (no V1 getPluginCreators)" >&2; exit 1; }
nm -D --undefined-only "$OUT/libatfr_sgs.so" | grep -q getPluginRegistry \
    || { echo "error: libatfr_sgs.so does not reference getPluginRegistry (static registrar missing)" >&2; exit 1; }
if nm -D --defined-only "$OUT/libatfr_sgs.so" | awk '{print $3}' | grep -qx 'getCreators\|getPluginCreators'; then
    echo "error: libatfr_sgs.so exports a dynamic-plugin entry point; loadLibrary would register it twice" >&2; exit 1
fi
echo "libatfr_sgs.so: static registrar references getPluginRegistry (resolved from libnvinfer at load time)"

# Registration behaviour: a driver with a recording IPluginRegistry (no libnvinfer) loads both libraries.
"$CXX" "${CXXFLAGS[@]}" -rdynamic -o "$OUT/sgsRegistryCheck" "$SRC/check/sgsRegistryCheck.cpp" -ldl
"$OUT/sgsRegistryCheck" "$OUT/libatfr_sgs.so" "$OUT/libatfr_sgs_vc.so"
echo "OK"
