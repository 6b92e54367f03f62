/*
 * ATFR SGS plugin: per-element bin arithmetic shared by the CUDA kernels and the host tests.
 *
 * Every function here is __host__ __device__ and reproduces the op order of the official
 * implementation (torch 1.9, fp32) and of runtime/sgs_numpy.py, bit for bit:
 *
 *   scale = (1 / maxΔ) * (float)(2B)      reciprocal THEN multiply (torch's `int / tensor`)
 *   δ_t   = Δ_t * scale
 *   M     = max_t δ_t
 *   w     = M / (float)B                  true division
 *   c_b   = (float)b * w + w / 2          separately rounded multiply and add (no FMA)
 *   linear: K = relu(fp32(1 + 1e-7) - |δ - c_b|)   NaN propagates (torch.relu keeps NaN)
 *   delta : K = (|δ - c_b| <= w / 2) ? 1 : 0
 *   normalized variants: K / (float)max(1, #non-zero entries of the row)
 *
 * Rounding: on the device every +,-,*,/ goes through the __f*_rn intrinsics, which the
 * compiler never contracts into an FMA regardless of -fmad. On the host the arithmetic is
 * written as plain fp32 operators: compile host code with -ffp-contract=off (GCC contracts
 * a*b+c into an FMA by default on targets that have one, e.g. aarch64/Jetson) and never with
 * -ffast-math. The host test (tests/test_plugin_sources.py) builds with those flags.
 *
 * This header has no CUDA runtime dependency when compiled by a plain C++ compiler.
 */
#ifndef ATFR_SGS_MATH_H
#define ATFR_SGS_MATH_H

#include <stdint.h>

#if defined(__CUDACC__)
#define SGS_HD __host__ __device__ __forceinline__
#else
#define SGS_HD inline
#endif

#if defined(__FAST_MATH__) && !defined(__CUDA_ARCH__)
#error "sgsMath.h must not be compiled with -ffast-math: the SGS bin arithmetic must be IEEE fp32"
#endif

namespace atfr
{
namespace sgs
{

//! fp32(1.0000001) == 1 + 2^-23: the python double 1 + 1e-7 rounded to fp32.
static constexpr float kLinearOne = 1.00000011920928955078125f;

//! Kernel codes (plugin field `kernel`).
enum KernelType : int32_t
{
    kLINEAR = 0,
    kDELTA = 1
};

// ---- separately rounded fp32 operations --------------------------------------------------
SGS_HD float fmul(float a, float b)
{
#if defined(__CUDA_ARCH__)
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}

SGS_HD float fadd(float a, float b)
{
#if defined(__CUDA_ARCH__)
    return __fadd_rn(a, b);
#else
    return a + b;
#endif
}

SGS_HD float fsub(float a, float b)
{
#if defined(__CUDA_ARCH__)
    return __fsub_rn(a, b);
#else
    return a - b;
#endif
}

SGS_HD float fdiv(float a, float b)
{
#if defined(__CUDA_ARCH__)
    return __fdiv_rn(a, b);
#else
    return a / b;
#endif
}

SGS_HD bool isNaN(float x)
{
    return x != x;
}

SGS_HD float fabsExact(float x)
{
    // |x| by clearing the sign bit (exact; NaN stays NaN).
    return x < 0.0f ? -x : (x == 0.0f ? 0.0f : x);
}

//! max that propagates NaN (torch.max / numpy.max semantics): once NaN, always NaN.
SGS_HD float nanMax(float acc, float x)
{
    if (isNaN(acc) || isNaN(x))
    {
        return isNaN(acc) ? acc : x;
    }
    return x > acc ? x : acc;
}

//! Number of bins B from the `num_bins` field and the runtime T.
SGS_HD int32_t resolveNumBins(int32_t numBins, int32_t T)
{
    return numBins == -1 ? T : numBins;
}

//! The guard_zero rule: a sample whose max Δ is 0 uses Δ = 1 for every frame.
SGS_HD bool guardActive(int32_t guardZero, float maxDelta)
{
    return guardZero != 0 && maxDelta == 0.0f;
}

//! scale = (1 / maxΔ) * 2B  (reciprocal then multiply, as torch evaluates `2B / tensor`).
SGS_HD float distanceScale(float maxDelta, int32_t B)
{
    return fmul(fdiv(1.0f, maxDelta), (float) (2 * B));
}

//! δ = Δ * scale
SGS_HD float scaledDistance(float delta, float scale)
{
    return fmul(delta, scale);
}

//! w = M / B
SGS_HD float binWidth(float maxScaled, int32_t B)
{
    return fdiv(maxScaled, (float) B);
}

//! w / 2 (mu_start, and the delta kernel's radius)
SGS_HD float halfWidth(float width)
{
    return fdiv(width, 2.0f);
}

//! c_b = (float)b * w + w/2, the multiply and the add rounded separately.
SGS_HD float binCenter(int32_t b, float width)
{
    return fadd(fmul((float) b, width), halfWidth(width));
}

//! Raw (un-normalized) kernel weight of scaled distance `d` for a bin with centre `c`.
SGS_HD float rawWeight(int32_t kernel, float d, float c, float width)
{
    float const dist = fabsExact(fsub(d, c));
    if (kernel == kDELTA)
    {
        return dist <= halfWidth(width) ? 1.0f : 0.0f; // NaN compares false -> 0
    }
    float const v = fsub(kLinearOne, dist);
    if (isNaN(v))
    {
        return v; // torch.relu keeps NaN
    }
    return v > 0.0f ? v : 0.0f;
}

//! Normalization divisor: the count of non-zero entries (NaN counts), clamped to >= 1.
SGS_HD float normalizeDivisor(int32_t nonZeroCount)
{
    return (float) (nonZeroCount < 1 ? 1 : nonZeroCount);
}

SGS_HD float normalizeWeight(float k, float divisor)
{
    return fdiv(k, divisor);
}

//! A row is active iff its fp32 sum is != 0 (NaN != 0, so a NaN row is active).
SGS_HD bool rowActive(float rowSum)
{
    return rowSum != 0.0f;
}

// ---- whole-sample reference (host and device) ---------------------------------------------
//! Everything the weights kernel computes for ONE sample, written as a plain serial loop. Used by
//! the host test library; the CUDA kernel computes the same values in parallel with the same
//! per-element functions above (max is order independent, row sums are sequential in t in both).
//!
//! delta [T] in; scaled [T], centers [B], width [1], kraw [B*T], kcompact [B*T] out (any may be
//! null except delta/kraw/kcompact). Returns the number of active rows k.
SGS_HD int32_t sampleWeights(float const* delta, int32_t T, int32_t B, int32_t kernel, int32_t normalize,
    int32_t dropBins, int32_t guardZero, float* scaled, float* centers, float* widthOut, float* kraw,
    float* kcompact)
{
    float m1 = delta[0];
    for (int32_t t = 1; t < T; ++t)
    {
        m1 = nanMax(m1, delta[t]);
    }
    bool const guard = guardActive(guardZero, m1);
    if (guard)
    {
        m1 = 1.0f;
    }
    float const scale = distanceScale(m1, B);
    float M = 0.0f;
    for (int32_t t = 0; t < T; ++t)
    {
        float const d = scaledDistance(guard ? 1.0f : delta[t], scale);
        if (scaled)
        {
            scaled[t] = d;
        }
        M = (t == 0) ? d : nanMax(M, d);
    }
    float const w = binWidth(M, B);
    if (widthOut)
    {
        *widthOut = w;
    }
    int32_t k = 0;
    for (int32_t b = 0; b < B; ++b)
    {
        float const c = binCenter(b, w);
        if (centers)
        {
            centers[b] = c;
        }
        int32_t nz = 0;
        for (int32_t t = 0; t < T; ++t)
        {
            float const d = scaledDistance(guard ? 1.0f : delta[t], scale);
            float const v = rawWeight(kernel, d, c, w);
            kraw[b * T + t] = v;
            nz += (v != 0.0f) ? 1 : 0;
        }
        float sum = 0.0f;
        float const div = normalizeDivisor(nz);
        for (int32_t t = 0; t < T; ++t)
        {
            float v = kraw[b * T + t];
            if (normalize)
            {
                v = normalizeWeight(v, div);
                kraw[b * T + t] = v;
            }
            sum = fadd(sum, v);
        }
        bool const active = rowActive(sum);
        if (!dropBins)
        {
            for (int32_t t = 0; t < T; ++t)
            {
                kcompact[b * T + t] = kraw[b * T + t];
            }
        }
        else if (active)
        {
            for (int32_t t = 0; t < T; ++t)
            {
                kcompact[k * T + t] = kraw[b * T + t];
            }
        }
        k += active ? 1 : 0;
    }
    if (dropBins)
    {
        for (int32_t r = k; r < B; ++r)
        {
            for (int32_t t = 0; t < T; ++t)
            {
                kcompact[r * T + t] = 0.0f;
            }
        }
    }
    return k;
}

} // namespace sgs
} // namespace atfr

#endif // ATFR_SGS_MATH_H
