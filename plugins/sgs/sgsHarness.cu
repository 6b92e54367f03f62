/*
 * ATFR SGS plugin: TensorRT-free C entry points around the CUDA kernels, for the GPU tests
 * (tests/test_sgs_cuda.py) and the bandwidth benchmark (benchmarks/sgs_kernel_bandwidth.py).
 * Built into libatfr_sgs_harness.so (CMake option ATFR_SGS_BUILD_HARNESS, or by the tests with nvcc).
 *
 * All pointers of atfr_sgs_forward are HOST pointers; the function copies to/from the device.
 * N == 0 runs the plugin's empty-batch path (sgsForward) and only returns B'.
 * Return value: 0 on success, otherwise the cudaError_t code (or -1 for bad arguments).
 */
#include "sgsKernel.h"

#include <cuda_runtime.h>
#include <vector>

using atfr::sgs::SgsParams;
using atfr::sgs::SgsWorkspace;

namespace
{
struct DeviceBuffer
{
    void* ptr{nullptr};
    ~DeviceBuffer()
    {
        if (ptr)
        {
            cudaFree(ptr);
        }
    }
    cudaError_t alloc(size_t bytes)
    {
        return cudaMalloc(&ptr, bytes < 1 ? 1 : bytes);
    }
};

#define SGS_CHECK(call)                                                                                                \
    do                                                                                                                 \
    {                                                                                                                  \
        cudaError_t const e_ = (call);                                                                                 \
        if (e_ != cudaSuccess)                                                                                         \
        {                                                                                                              \
            return static_cast<int>(e_);                                                                               \
        }                                                                                                              \
    } while (0)

SgsParams makeParams(int n, int c, int t, int h, int w, int numBins, int kernel, int normalize, int dropBins,
    int guardZero)
{
    SgsParams p;
    p.N = n;
    p.C = c;
    p.T = t;
    p.HW = static_cast<int64_t>(h) * w;
    p.B = numBins == -1 ? t : numBins;
    p.kernel = kernel;
    p.normalize = normalize;
    p.dropBins = dropBins;
    p.guardZero = guardZero;
    return p;
}
} // namespace

extern "C" {

//! Capacity the caller must provide for `out` (elements) and the matrices (floats).
int atfr_sgs_num_bins(int t, int num_bins)
{
    return num_bins == -1 ? t : num_bins;
}

/*!
 * One SGS forward on the GPU.
 *   feat     [N,C,T,H,W] fp32 (feat_is_half == 0) or fp16 bits (uint16, feat_is_half == 1)
 *   dist     [N,T] fp32
 *   out      capacity N*C*B*H*W elements (same type as feat); filled as [N,C,B',H,W] dense
 *   bprime   1 int32
 *   k_per_sample [N] int32, kernel_compact [N,B,T], kernel_raw [N,B,T], scaled [N,T], centers [N,B],
 *   width [N]: optional (may be null) debug copies of the weights kernel's results.
 */
int atfr_sgs_forward(void const* feat, int feat_is_half, float const* dist, int n, int c, int t, int h, int w,
    int num_bins, int kernel, int normalize, int drop_bins, int guard_zero, void* out, int* bprime,
    int* k_per_sample, float* kernel_compact, float* kernel_raw, float* scaled, float* centers, float* width)
{
    if (n < 0 || c < 0 || t <= 0 || h < 0 || w < 0 || (num_bins != -1 && num_bins < 1) || !feat || !dist || !out
        || !bprime)
    {
        return -1;
    }
    SgsParams const p = makeParams(n, c, t, h, w, num_bins, kernel, normalize, drop_bins, guard_zero);
    if (n == 0)
    {
        // Empty batch: exactly what the plugin's enqueue does (sgsForward writes B' on the device).
        DeviceBuffer dBp;
        SGS_CHECK(dBp.alloc(sizeof(int32_t)));
        SGS_CHECK(atfr::sgs::sgsForward(p, feat, feat_is_half != 0, nullptr, nullptr, static_cast<int32_t*>(dBp.ptr),
            nullptr, nullptr));
        SGS_CHECK(cudaStreamSynchronize(nullptr));
        int32_t bp = -1;
        SGS_CHECK(cudaMemcpy(&bp, dBp.ptr, sizeof(int32_t), cudaMemcpyDeviceToHost));
        *bprime = bp;
        return 0;
    }
    size_t const elem = feat_is_half ? 2 : 4;
    size_t const featBytes = elem * static_cast<size_t>(n) * c * t * p.HW;
    size_t const outBytes = elem * static_cast<size_t>(n) * c * p.B * p.HW;
    size_t const nbt = static_cast<size_t>(n) * p.B * t;

    DeviceBuffer dFeat, dDist, dOut, dBp, dWs, dScaled, dCenters, dWidth;
    SGS_CHECK(dFeat.alloc(featBytes));
    SGS_CHECK(dDist.alloc(sizeof(float) * n * t));
    SGS_CHECK(dOut.alloc(outBytes));
    SGS_CHECK(dBp.alloc(sizeof(int)));
    SGS_CHECK(dWs.alloc(atfr::sgs::sgsWorkspaceSize(n, t, p.B)));
    SGS_CHECK(dScaled.alloc(sizeof(float) * n * t));
    SGS_CHECK(dCenters.alloc(sizeof(float) * n * p.B));
    SGS_CHECK(dWidth.alloc(sizeof(float) * n));
    SGS_CHECK(cudaMemcpy(dFeat.ptr, feat, featBytes, cudaMemcpyHostToDevice));
    SGS_CHECK(cudaMemcpy(dDist.ptr, dist, sizeof(float) * n * t, cudaMemcpyHostToDevice));
    // Poison the output so that an unwritten element shows up in the tests.
    SGS_CHECK(cudaMemset(dOut.ptr, 0x7f, outBytes));

    cudaStream_t stream = nullptr;
    int32_t* dBprime = static_cast<int32_t*>(dBp.ptr);
    SGS_CHECK(cudaMemsetAsync(dBprime, 0, sizeof(int32_t), stream));
    SgsWorkspace const ws = atfr::sgs::sgsWorkspaceView(dWs.ptr, n, t, p.B);
    SGS_CHECK(atfr::sgs::sgsLaunchWeights(p, static_cast<float const*>(dDist.ptr), ws, dBprime,
        static_cast<float*>(dScaled.ptr), static_cast<float*>(dCenters.ptr), static_cast<float*>(dWidth.ptr), stream));
    SGS_CHECK(atfr::sgs::sgsLaunchAggregate(p, dFeat.ptr, feat_is_half != 0, ws, dBprime, dOut.ptr, stream));
    SGS_CHECK(cudaStreamSynchronize(stream));

    int32_t bp = 0;
    SGS_CHECK(cudaMemcpy(&bp, dBprime, sizeof(int32_t), cudaMemcpyDeviceToHost));
    *bprime = bp;
    SGS_CHECK(cudaMemcpy(out, dOut.ptr, elem * static_cast<size_t>(n) * c * bp * p.HW, cudaMemcpyDeviceToHost));
    if (k_per_sample)
    {
        SGS_CHECK(cudaMemcpy(k_per_sample, ws.counts, sizeof(int32_t) * n, cudaMemcpyDeviceToHost));
    }
    if (kernel_compact)
    {
        SGS_CHECK(cudaMemcpy(kernel_compact, ws.kcompact, sizeof(float) * nbt, cudaMemcpyDeviceToHost));
    }
    if (kernel_raw)
    {
        SGS_CHECK(cudaMemcpy(kernel_raw, ws.kraw, sizeof(float) * nbt, cudaMemcpyDeviceToHost));
    }
    if (scaled)
    {
        SGS_CHECK(cudaMemcpy(scaled, dScaled.ptr, sizeof(float) * n * t, cudaMemcpyDeviceToHost));
    }
    if (centers)
    {
        SGS_CHECK(cudaMemcpy(centers, dCenters.ptr, sizeof(float) * n * p.B, cudaMemcpyDeviceToHost));
    }
    if (width)
    {
        SGS_CHECK(cudaMemcpy(width, dWidth.ptr, sizeof(float) * n, cudaMemcpyDeviceToHost));
    }
    return 0;
}

/*!
 * Timing of the full forward (memset + weights + aggregation) on device-resident random data.
 * Writes the mean milliseconds per forward of `iters` launches (after `warmup`), the B' reached,
 * and the bytes moved by the aggregation (X read once per bin tile + Y written).
 */
int atfr_sgs_bench(int feat_is_half, int n, int c, int t, int h, int w, int num_bins, int kernel, int drop_bins,
    int warmup, int iters, float* ms_per_iter, int* bprime_out, double* bytes_moved)
{
    if (n <= 0 || c <= 0 || t <= 0 || h <= 0 || w <= 0 || iters <= 0 || !ms_per_iter || !bprime_out || !bytes_moved)
    {
        return -1;
    }
    SgsParams const p = makeParams(n, c, t, h, w, num_bins, kernel, 0, drop_bins, 1);
    size_t const elem = feat_is_half ? 2 : 4;
    size_t const featElems = static_cast<size_t>(n) * c * t * p.HW;
    DeviceBuffer dFeat, dDist, dOut, dBp, dWs;
    SGS_CHECK(dFeat.alloc(elem * featElems));
    SGS_CHECK(dDist.alloc(sizeof(float) * n * t));
    SGS_CHECK(dOut.alloc(elem * static_cast<size_t>(n) * c * p.B * p.HW));
    SGS_CHECK(dBp.alloc(sizeof(int)));
    SGS_CHECK(dWs.alloc(atfr::sgs::sgsWorkspaceSize(n, t, p.B)));
    SGS_CHECK(cudaMemset(dFeat.ptr, 0x3c, elem * featElems)); // finite values in fp32 and fp16
    std::vector<float> hDist(static_cast<size_t>(n) * t);
    for (size_t i = 0; i < hDist.size(); ++i)
    {
        hDist[i] = 1.0f + static_cast<float>((i * 2654435761u) % 1000u) * 0.001f; // spread over the bins
    }
    SGS_CHECK(cudaMemcpy(dDist.ptr, hDist.data(), sizeof(float) * hDist.size(), cudaMemcpyHostToDevice));

    cudaStream_t stream;
    SGS_CHECK(cudaStreamCreate(&stream));
    cudaEvent_t start, stop;
    SGS_CHECK(cudaEventCreate(&start));
    SGS_CHECK(cudaEventCreate(&stop));
    int32_t* dBprime = static_cast<int32_t*>(dBp.ptr);
    for (int i = 0; i < warmup; ++i)
    {
        SGS_CHECK(atfr::sgs::sgsForward(p, dFeat.ptr, feat_is_half != 0, static_cast<float const*>(dDist.ptr),
            dOut.ptr, dBprime, dWs.ptr, stream));
    }
    SGS_CHECK(cudaEventRecord(start, stream));
    for (int i = 0; i < iters; ++i)
    {
        SGS_CHECK(atfr::sgs::sgsForward(p, dFeat.ptr, feat_is_half != 0, static_cast<float const*>(dDist.ptr),
            dOut.ptr, dBprime, dWs.ptr, stream));
    }
    SGS_CHECK(cudaEventRecord(stop, stream));
    SGS_CHECK(cudaEventSynchronize(stop));
    float ms = 0.0f;
    SGS_CHECK(cudaEventElapsedTime(&ms, start, stop));
    int32_t bp = 0;
    SGS_CHECK(cudaMemcpy(&bp, dBprime, sizeof(int32_t), cudaMemcpyDeviceToHost));
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    cudaStreamDestroy(stream);
    *ms_per_iter = ms / iters;
    *bprime_out = bp;
    int const tiles = (bp + 31) / 32;
    *bytes_moved = static_cast<double>(elem) * (static_cast<double>(featElems) * (tiles < 1 ? 1 : tiles)
                       + static_cast<double>(n) * c * bp * p.HW);
    return 0;
}

//! Device memory bandwidth reference: a device-to-device copy of `bytes`, GB/s (read + write counted).
int atfr_sgs_copy_bandwidth(double bytes, int iters, double* gbps)
{
    if (bytes <= 0 || iters <= 0 || !gbps)
    {
        return -1;
    }
    size_t const nbytes = static_cast<size_t>(bytes);
    DeviceBuffer a, b;
    SGS_CHECK(a.alloc(nbytes));
    SGS_CHECK(b.alloc(nbytes));
    SGS_CHECK(cudaMemset(a.ptr, 0, nbytes));
    cudaEvent_t start, stop;
    SGS_CHECK(cudaEventCreate(&start));
    SGS_CHECK(cudaEventCreate(&stop));
    SGS_CHECK(cudaMemcpy(b.ptr, a.ptr, nbytes, cudaMemcpyDeviceToDevice));
    SGS_CHECK(cudaEventRecord(start));
    for (int i = 0; i < iters; ++i)
    {
        SGS_CHECK(cudaMemcpyAsync(b.ptr, a.ptr, nbytes, cudaMemcpyDeviceToDevice));
    }
    SGS_CHECK(cudaEventRecord(stop));
    SGS_CHECK(cudaEventSynchronize(stop));
    float ms = 0.0f;
    SGS_CHECK(cudaEventElapsedTime(&ms, start, stop));
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    *gbps = 2.0 * static_cast<double>(nbytes) * iters / (ms * 1e-3) / 1e9;
    return 0;
}

} // extern "C"
