/*
 * ATFR SGS plugin: CUDA kernels. See sgsKernel.h for the contract and sgsMath.h for the exact
 * fp32 op order (the per-element functions are shared with the host tests).
 */
#include "sgsKernel.h"
#include "sgsMath.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <tuple>
#include <utility>

namespace atfr
{
namespace sgs
{
namespace
{

constexpr int32_t kWeightsThreads = 128;
constexpr int32_t kAggThreads = 256;
constexpr int32_t kBinTile = 32;             //!< output bins per aggregation thread
constexpr size_t kMaxStaticSmem = 48 * 1024; //!< default dynamic shared memory limit

size_t alignUp(size_t x, size_t a = 256)
{
    return (x + a - 1) / a * a;
}

template <typename... P, size_t... I>
cudaError_t launchTuple(
    void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream, std::tuple<P...>& args,
    std::index_sequence<I...>)
{
    void* ptrs[] = {static_cast<void*>(&std::get<I>(args))...};
    return cudaLaunchKernel(kernel, grid, block, ptrs, smem, stream);
}

//! Checked launch. cudaLaunchKernel returns this launch's own configuration error. The former
//! `kernel<<<...>>>(); return cudaGetLastError();` also returned (and cleared) an unrelated error
//! left by earlier work in the process, e.g. another TensorRT layer's. The arguments are converted
//! to the kernel's exact parameter types first, because cudaLaunchKernel copies them by address.
template <typename... P, typename... A>
cudaError_t launchKernel(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream, A&&... args)
{
    static_assert(sizeof...(P) == sizeof...(A), "kernel argument count");
    std::tuple<P...> typed(std::forward<A>(args)...);
    return launchTuple(kernel, grid, block, smem, stream, typed, std::index_sequence_for<P...>{});
}

//! Writes one int32 on the device, on `stream` (no host memory involved, so nothing to keep alive
//! until the copy runs and nothing to capture by reference in a CUDA graph).
__global__ void sgsStoreScalarKernel(int32_t* dst, int32_t value)
{
    *dst = value;
}

//! Block-wide NaN-propagating max of one value per thread (result valid in every thread).
__device__ float blockNanMax(float v, float* red)
{
    red[threadIdx.x] = v;
    __syncthreads();
    for (int32_t s = blockDim.x / 2; s > 0; s >>= 1)
    {
        if (threadIdx.x < s)
        {
            red[threadIdx.x] = nanMax(red[threadIdx.x], red[threadIdx.x + s]);
        }
        __syncthreads();
    }
    float const r = red[0];
    __syncthreads();
    return r;
}

// Kernel (a): one block per sample n.
// Dynamic shared memory: kWeightsThreads floats (reduction) + T floats (δ) + B ints (active flags).
// All shared memory is dynamic (one extern array): the CPU emulation in tests/cuda_emu gives it
// exactly the launch's byte count, pre-filled with NaN.
__global__ void __launch_bounds__(kWeightsThreads) sgsWeightsKernel(SgsParams p, float const* __restrict__ dist,
    float* __restrict__ kraw, float* __restrict__ kcompact, float* __restrict__ kT, int32_t* __restrict__ counts,
    int32_t* __restrict__ bprime, float* __restrict__ dbgScaled, float* __restrict__ dbgCenters,
    float* __restrict__ dbgWidth)
{
    extern __shared__ float smem[];
    float* red = smem;                                                       // [kWeightsThreads]
    float* sScaled = smem + kWeightsThreads;                                 // [T]
    int32_t* sActive = reinterpret_cast<int32_t*>(smem + kWeightsThreads + p.T); // [B]

    int32_t const n = blockIdx.x;
    int32_t const T = p.T;
    int32_t const B = p.B;
    float const* d = dist + static_cast<int64_t>(n) * T;

    // 1. m1 = max_t Δ (NaN propagates; max is exact so the reduction order does not matter).
    float local = d[0];
    for (int32_t t = threadIdx.x; t < T; t += blockDim.x)
    {
        local = nanMax(local, d[t]);
    }
    float m1 = blockNanMax(local, red);
    bool const guard = guardActive(p.guardZero, m1);
    if (guard)
    {
        m1 = 1.0f;
    }

    // 2. scale, δ_t, M = max δ.
    float const scale = distanceScale(m1, B);
    float localM = scaledDistance(guard ? 1.0f : d[0], scale);
    for (int32_t t = threadIdx.x; t < T; t += blockDim.x)
    {
        float const v = scaledDistance(guard ? 1.0f : d[t], scale);
        sScaled[t] = v;
        localM = nanMax(localM, v);
        if (dbgScaled)
        {
            dbgScaled[static_cast<int64_t>(n) * T + t] = v;
        }
    }
    float const M = blockNanMax(localM, red); // also orders the sScaled writes before the reads below
    float const w = binWidth(M, B);
    if (dbgWidth && threadIdx.x == 0)
    {
        dbgWidth[n] = w;
    }

    // 3. one thread per bin row: weights, non-zero count, normalization, fp32 row sum (sequential in t).
    float* rawN = kraw + static_cast<int64_t>(n) * B * T;
    for (int32_t b = threadIdx.x; b < B; b += blockDim.x)
    {
        float const c = binCenter(b, w);
        if (dbgCenters)
        {
            dbgCenters[static_cast<int64_t>(n) * B + b] = c;
        }
        float* row = rawN + static_cast<int64_t>(b) * T;
        int32_t nz = 0;
        for (int32_t t = 0; t < T; ++t)
        {
            float const v = rawWeight(p.kernel, sScaled[t], c, w);
            row[t] = v;
            nz += (v != 0.0f) ? 1 : 0;
        }
        float const div = normalizeDivisor(nz);
        float sum = 0.0f;
        for (int32_t t = 0; t < T; ++t)
        {
            float v = row[t];
            if (p.normalize)
            {
                v = normalizeWeight(v, div);
                row[t] = v;
            }
            sum = fadd(sum, v);
        }
        sActive[b] = rowActive(sum) ? 1 : 0;
    }
    __syncthreads(); // sActive and this block's kraw rows are visible block-wide

    // 4. compaction: active rows to the front in increasing b; rows >= k zeroed.
    int32_t k = 0;
    for (int32_t b = 0; b < B; ++b)
    {
        k += sActive[b];
    }
    float* compN = kcompact + static_cast<int64_t>(n) * B * T;
    float* tN = kT + static_cast<int64_t>(n) * T * B;
    for (int32_t b = threadIdx.x; b < B; b += blockDim.x)
    {
        int32_t dst = b;
        bool keep = true;
        if (p.dropBins)
        {
            int32_t before = 0;
            for (int32_t j = 0; j < b; ++j)
            {
                before += sActive[j];
            }
            dst = before;
            keep = sActive[b] != 0;
        }
        if (keep)
        {
            float const* row = rawN + static_cast<int64_t>(b) * T;
            for (int32_t t = 0; t < T; ++t)
            {
                float const v = row[t];
                compN[static_cast<int64_t>(dst) * T + t] = v;
                tN[static_cast<int64_t>(t) * B + dst] = v;
            }
        }
        // Rows k..B-1 of the compacted matrix hold zeros: thread b clears row b when b >= k.
        if (p.dropBins && b >= k)
        {
            for (int32_t t = 0; t < T; ++t)
            {
                compN[static_cast<int64_t>(b) * T + t] = 0.0f;
                tN[static_cast<int64_t>(t) * B + b] = 0.0f;
            }
        }
    }

    if (threadIdx.x == 0)
    {
        counts[n] = k;
        atomicMax(bprime, p.dropBins ? k : B);
    }
}

template <typename TIn>
__device__ __forceinline__ float loadAsFloat(TIn const* ptr);

template <>
__device__ __forceinline__ float loadAsFloat<float>(float const* ptr)
{
    return __ldg(ptr);
}

template <>
__device__ __forceinline__ float loadAsFloat<__half>(__half const* ptr)
{
    return __half2float(__ldg(ptr));
}

template <typename TIn>
__device__ __forceinline__ void storeFromFloat(TIn* ptr, float v);

template <>
__device__ __forceinline__ void storeFromFloat<float>(float* ptr, float v)
{
    *ptr = v;
}

template <>
__device__ __forceinline__ void storeFromFloat<__half>(__half* ptr, float v)
{
    *ptr = __float2half_rn(v);
}

// Kernel (b): grid (ceil(C*HW / kAggThreads), ceil(B / kBinTile), N).
// kSmem: the [T, kBinTile] weight tile is staged in shared memory (T * 128 B); otherwise the
// (warp-uniform) weight loads go to global memory through the read-only cache.
template <typename TIn, bool kSmem>
__global__ void __launch_bounds__(kAggThreads) sgsAggregateKernel(SgsParams p, TIn const* __restrict__ feat,
    float const* __restrict__ kT, int32_t const* __restrict__ bprime, TIn* __restrict__ out)
{
    extern __shared__ float sK[]; // [T][kBinTile] when kSmem

    int32_t const bp = *bprime;
    int32_t const b0 = blockIdx.y * kBinTile;
    if (b0 >= bp)
    {
        return; // block-uniform: this tile holds no output bin
    }
    int32_t const n = blockIdx.z;
    int32_t const T = p.T;
    int32_t const B = p.B;
    float const* kTn = kT + static_cast<int64_t>(n) * T * B;

    if (kSmem)
    {
        for (int32_t i = threadIdx.x; i < T * kBinTile; i += blockDim.x)
        {
            int32_t const t = i / kBinTile;
            int32_t const j = i - t * kBinTile;
            sK[i] = (b0 + j < B) ? kTn[static_cast<int64_t>(t) * B + b0 + j] : 0.0f;
        }
        __syncthreads();
    }

    int64_t const chw = static_cast<int64_t>(p.C) * p.HW;
    int64_t const e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (e >= chw)
    {
        return;
    }
    int64_t const c = e / p.HW;
    int64_t const hw = e - c * p.HW;
    TIn const* x = feat + (static_cast<int64_t>(n) * p.C + c) * T * p.HW + hw;

    float acc[kBinTile];
#pragma unroll
    for (int32_t j = 0; j < kBinTile; ++j)
    {
        acc[j] = 0.0f;
    }
    int32_t const nb = min(kBinTile, bp - b0);
    for (int32_t t = 0; t < T; ++t)
    {
        float const xv = loadAsFloat<TIn>(x + static_cast<int64_t>(t) * p.HW);
        if (kSmem)
        {
            float const* kr = sK + t * kBinTile;
#pragma unroll
            for (int32_t j = 0; j < kBinTile; ++j)
            {
                acc[j] = fmaf(kr[j], xv, acc[j]);
            }
        }
        else
        {
            float const* kr = kTn + static_cast<int64_t>(t) * B + b0;
#pragma unroll
            for (int32_t j = 0; j < kBinTile; ++j)
            {
                if (j < nb)
                {
                    acc[j] = fmaf(__ldg(kr + j), xv, acc[j]);
                }
            }
        }
    }
    TIn* y = out + (static_cast<int64_t>(n) * p.C + c) * bp * p.HW + hw;
#pragma unroll
    for (int32_t j = 0; j < kBinTile; ++j)
    {
        if (j < nb)
        {
            storeFromFloat<TIn>(y + static_cast<int64_t>(b0 + j) * p.HW, acc[j]);
        }
    }
}

template <typename TIn>
cudaError_t launchAggregate(SgsParams const& p, TIn const* feat, float const* kT, int32_t const* bprime, TIn* out,
    cudaStream_t stream)
{
    int64_t const chw = static_cast<int64_t>(p.C) * p.HW;
    dim3 grid(static_cast<uint32_t>((chw + kAggThreads - 1) / kAggThreads),
        static_cast<uint32_t>((p.B + kBinTile - 1) / kBinTile), static_cast<uint32_t>(p.N));
    size_t const smem = static_cast<size_t>(p.T) * kBinTile * sizeof(float);
    if (smem <= kMaxStaticSmem)
    {
        return launchKernel(sgsAggregateKernel<TIn, true>, grid, dim3(kAggThreads), smem, stream, p, feat, kT, bprime, out);
    }
    return launchKernel(sgsAggregateKernel<TIn, false>, grid, dim3(kAggThreads), 0, stream, p, feat, kT, bprime, out);
}

} // namespace

size_t sgsWorkspaceSize(int32_t N, int32_t T, int32_t B)
{
    size_t const mat = alignUp(sizeof(float) * static_cast<size_t>(N) * B * T);
    return 3 * mat + alignUp(sizeof(int32_t) * static_cast<size_t>(N));
}

SgsWorkspace sgsWorkspaceView(void* workspace, int32_t N, int32_t T, int32_t B)
{
    size_t const mat = alignUp(sizeof(float) * static_cast<size_t>(N) * B * T);
    char* base = static_cast<char*>(workspace);
    SgsWorkspace ws;
    ws.kraw = reinterpret_cast<float*>(base);
    ws.kcompact = reinterpret_cast<float*>(base + mat);
    ws.kT = reinterpret_cast<float*>(base + 2 * mat);
    ws.counts = reinterpret_cast<int32_t*>(base + 3 * mat);
    return ws;
}

cudaError_t sgsLaunchWeights(SgsParams const& p, float const* dist, SgsWorkspace const& ws, int32_t* bprime,
    float* dbgScaled, float* dbgCenters, float* dbgWidth, cudaStream_t stream)
{
    if (p.N <= 0 || p.T <= 0 || p.B <= 0)
    {
        return cudaErrorInvalidValue;
    }
    size_t const smem = sizeof(float) * (kWeightsThreads + static_cast<size_t>(p.T))
        + sizeof(int32_t) * static_cast<size_t>(p.B);
    if (smem > kMaxStaticSmem)
    {
        return cudaErrorInvalidValue; // T + B beyond ~12k: far outside any SGS configuration
    }
    return launchKernel(sgsWeightsKernel, dim3(static_cast<uint32_t>(p.N)), dim3(kWeightsThreads), smem, stream, p,
        dist, ws.kraw, ws.kcompact, ws.kT, ws.counts, bprime, dbgScaled, dbgCenters, dbgWidth);
}

cudaError_t sgsLaunchAggregate(SgsParams const& p, void const* feat, bool featIsHalf, SgsWorkspace const& ws,
    int32_t const* bprime, void* out, cudaStream_t stream)
{
    if (p.N <= 0 || p.C <= 0 || p.HW <= 0)
    {
        return cudaSuccess; // empty tensor: nothing to aggregate
    }
    if (featIsHalf)
    {
        return launchAggregate<__half>(
            p, static_cast<__half const*>(feat), ws.kT, bprime, static_cast<__half*>(out), stream);
    }
    return launchAggregate<float>(p, static_cast<float const*>(feat), ws.kT, bprime, static_cast<float*>(out), stream);
}

cudaError_t sgsStoreScalar(int32_t* dst, int32_t value, cudaStream_t stream)
{
    if (value == 0)
    {
        return cudaMemsetAsync(dst, 0, sizeof(int32_t), stream);
    }
    return launchKernel(sgsStoreScalarKernel, dim3(1), dim3(1), 0, stream, dst, value);
}

cudaError_t sgsForward(SgsParams const& p, void const* feat, bool featIsHalf, float const* dist, void* out,
    int32_t* bprime, void* workspace, cudaStream_t stream)
{
    if (p.N == 0)
    {
        // Empty batch: B' = max over no samples = 0, or B without dropping. Nothing else to do.
        return sgsStoreScalar(bprime, p.dropBins ? 0 : p.B, stream);
    }
    if (workspace == nullptr)
    {
        return cudaErrorInvalidValue;
    }
    cudaError_t err = cudaMemsetAsync(bprime, 0, sizeof(int32_t), stream);
    if (err != cudaSuccess)
    {
        return err;
    }
    SgsWorkspace const ws = sgsWorkspaceView(workspace, p.N, p.T, p.B);
    err = sgsLaunchWeights(p, dist, ws, bprime, nullptr, nullptr, nullptr, stream);
    if (err != cudaSuccess)
    {
        return err;
    }
    return sgsLaunchAggregate(p, feat, featIsHalf, ws, bprime, out, stream);
}

} // namespace sgs
} // namespace atfr
