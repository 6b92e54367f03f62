/*
 * ATFR SGS plugin: CUDA kernels (host-side launch API).
 *
 * Two kernels per forward:
 *   (a) sgsWeightsKernel: one block per sample. Per-sample max Δ, scaling, bins, kernel weights,
 *       optional row normalization, active-bin compaction into the workspace weight matrix
 *       [N,B,T] (and a transposed copy [N,T,B] for the aggregation), per-sample counts k_n, and
 *       B' = max_n k_n (or B when drop_bins == 0) via atomicMax into the device size tensor.
 *   (b) sgsAggregateKernel: Y[n,c,b',hw] = Σ_t K[n,b',t] X[n,c,t,hw], fp32 accumulation, one thread
 *       per (n, c*hw) element and a tile of up to 32 output bins, so X is read once when B <= 32
 *       (ceil(B/32) times otherwise). Reads B' from device memory: no host synchronization.
 *
 * Layouts are dense row-major: feat [N,C,T,H,W], dist [N,T], out [N,C,B',H,W] (B' = the value the
 * weights kernel wrote), bprime int32 scalar.
 */
#ifndef ATFR_SGS_KERNEL_H
#define ATFR_SGS_KERNEL_H

#include <cstddef>
#include <cstdint>
#include <cuda_runtime_api.h>

namespace atfr
{
namespace sgs
{

struct SgsParams
{
    int32_t N{0};
    int32_t C{0};
    int32_t T{0};
    int64_t HW{0};  //!< H * W
    int32_t B{0};   //!< resolved number of bins (num_bins == -1 -> T)
    int32_t kernel{0};    //!< 0 linear, 1 delta
    int32_t normalize{0}; //!< divide each row by its non-zero count
    int32_t dropBins{1};  //!< compact active bins, B' = max_n k_n
    int32_t guardZero{0}; //!< max Δ == 0 -> Δ := 1
};

//! Workspace view (all pointers inside one allocation of sgsWorkspaceSize bytes).
struct SgsWorkspace
{
    float* kraw{nullptr};     //!< [N,B,T] raw (normalized if requested) weights, bin order
    float* kcompact{nullptr}; //!< [N,B,T] compacted weights; rows >= k_n are zero
    float* kT{nullptr};       //!< [N,T,B] transposed compacted weights (aggregation operand)
    int32_t* counts{nullptr}; //!< [N] active bins per sample (k_n)
};

//! Bytes of workspace for the given (maximum) sizes. Valid for any smaller N, T, B.
size_t sgsWorkspaceSize(int32_t N, int32_t T, int32_t B);

//! Split a workspace pointer (256-byte aligned sub-buffers).
SgsWorkspace sgsWorkspaceView(void* workspace, int32_t N, int32_t T, int32_t B);

//! Kernel (a). `bprime` must be zeroed on the stream beforehand (sgsForward does it). The debug
//! outputs scaled [N,T], centers [N,B], width [N] may be null.
cudaError_t sgsLaunchWeights(SgsParams const& p, float const* dist, SgsWorkspace const& ws, int32_t* bprime,
    float* dbgScaled, float* dbgCenters, float* dbgWidth, cudaStream_t stream);

//! Kernel (b). `featIsHalf` selects the __half variant of feat/out; accumulation is fp32.
cudaError_t sgsLaunchAggregate(SgsParams const& p, void const* feat, bool featIsHalf, SgsWorkspace const& ws,
    int32_t const* bprime, void* out, cudaStream_t stream);

//! Writes `value` to the device int32 `dst` on `stream` (memset for 0, else a one-thread kernel).
cudaError_t sgsStoreScalar(int32_t* dst, int32_t value, cudaStream_t stream);

//! Full forward on device pointers: memset(bprime) + (a) + (b), all on `stream`. N == 0 only writes
//! B' (0, or B when drop_bins == 0) and needs no workspace.
cudaError_t sgsForward(SgsParams const& p, void const* feat, bool featIsHalf, float const* dist, void* out,
    int32_t* bprime, void* workspace, cudaStream_t stream);

} // namespace sgs
} // namespace atfr

#endif // ATFR_SGS_KERNEL_H
