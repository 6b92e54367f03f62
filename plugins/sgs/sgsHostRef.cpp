/*
 * ATFR SGS plugin: host-only build of the kernel's bin arithmetic (sgsMath.h), exposed through a C
 * entry point for ctypes. tests/test_plugin_sources.py compiles it with
 *   g++ -std=c++17 -O2 -ffp-contract=off -fno-fast-math -shared -fPIC sgsHostRef.cpp
 * and checks it bit-exactly against the golden SGS-op cases. No CUDA needed.
 */
#include "sgsMath.h"

#include <cstdint>

extern "C" {

/*!
 * delta [N,T] in; scaled [N,T], centers [N,B], width [N], kernel_raw [N,B,T], kernel_compact [N,B,T],
 * k_per_sample [N] out. Returns B' (max k, or B when drop_bins == 0), or -1 on bad arguments.
 */
int atfr_sgs_host_weights(float const* delta, int n, int t, int num_bins, int kernel, int normalize, int drop_bins,
    int guard_zero, float* scaled, float* centers, float* width, float* kernel_raw, float* kernel_compact,
    int* k_per_sample)
{
    if (n < 0 || t < 1 || (num_bins != -1 && num_bins < 1) || !delta || !kernel_raw || !kernel_compact)
    {
        return -1;
    }
    int32_t const B = atfr::sgs::resolveNumBins(num_bins, t);
    int bp = 0;
    for (int i = 0; i < n; ++i)
    {
        int64_t const nt = static_cast<int64_t>(i) * t;
        int64_t const nbt = static_cast<int64_t>(i) * B * t;
        int32_t const k = atfr::sgs::sampleWeights(delta + nt, t, B, kernel, normalize, drop_bins, guard_zero,
            scaled ? scaled + nt : nullptr, centers ? centers + static_cast<int64_t>(i) * B : nullptr,
            width ? width + i : nullptr, kernel_raw + nbt, kernel_compact + nbt);
        if (k_per_sample)
        {
            k_per_sample[i] = k;
        }
        int const rows = drop_bins ? k : B;
        bp = rows > bp ? rows : bp;
    }
    return bp;
}

} // extern "C"
