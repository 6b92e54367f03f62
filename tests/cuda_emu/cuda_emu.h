/*
 * A small CUDA emulation for the host, so that the unmodified plugins/sgs/sgsKernel.cu and
 * sgsHarness.cu compile with g++ and run on the CPU in every CI run:
 *
 *   g++ -std=c++17 -x c++ -include cuda_emu.h -I tests/cuda_emu -ffp-contract=off ... sgsKernel.cu
 *
 * What it models, and why:
 *   - threadIdx / blockIdx / blockDim / gridDim are thread-local values.
 *   - A launch runs the blocks one after another. Each block's threads are real std::threads (from a
 *     pool that lives as long as the process) that meet at a barrier for __syncthreads, so a missing __syncthreads is a real data race (and a
 *     ThreadSanitizer report in the TSan build). The barrier also aborts on divergent
 *     __syncthreads (threads of one block waiting at different call sites) and on a __syncthreads
 *     after a thread of the block has returned.
 *   - Shared memory: only dynamic shared memory (`extern __shared__ T name[];`) is supported.
 *     __shared__ expands to nothing, so each such array is an undefined external symbol that the
 *     build (tests/cuda_tools.py) binds with --defsym to atfr_cuda_emu_dyn_smem: all of them alias
 *     one buffer, as on the device. It is re-filled with NaN bits (0x7fffffff words) before every
 *     block, and under AddressSanitizer the bytes beyond the launch's dynamic size are poisoned.
 *     A static `__shared__ T x[N];` would silently become per-thread here, so the build refuses
 *     sources that declare one.
 *   - cudaMalloc returns memory filled with 0xff bytes (NaN in fp32 and fp16, -1 in int32), so a
 *     kernel that relies on zero-initialized device memory fails the checks.
 *   - Atomics run under one lock. Streams and events are synchronous; copies are memcpy.
 *     cudaMemcpyAsync between the device and pageable host memory is refused (stricter than CUDA:
 *     a hidden synchronization, and a dangling host pointer under CUDA graph capture).
 *   - __CUDA_ARCH__ is defined, so sgsMath.h takes its device branch (__fadd_rn etc., emulated as
 *     separately rounded fp32 operations; build with -ffp-contract=off so nothing is fused).
 *   - __half is _Float16 (IEEE binary16; conversions round to nearest even like __float2half_rn).
 * It does not model warps, memory ordering between blocks, the read-only cache, or timing.
 */
#ifndef ATFR_CUDA_EMU_H
#define ATFR_CUDA_EMU_H

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define CUDA_EMU_POISON(p, n) __asan_poison_memory_region((p), (n))
#define CUDA_EMU_UNPOISON(p, n) __asan_unpoison_memory_region((p), (n))
#else
#define CUDA_EMU_POISON(p, n) ((void) (p), (void) (n))
#define CUDA_EMU_UNPOISON(p, n) ((void) (p), (void) (n))
#endif

// ---- language ---------------------------------------------------------------------------------
#define __CUDA_ARCH__ 870
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__

struct uint3
{
    unsigned int x, y, z;
};

struct dim3
{
    unsigned int x, y, z;
    constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1)
        : x(vx)
        , y(vy)
        , z(vz)
    {
    }
};

inline thread_local uint3 threadIdx{0, 0, 0};
inline thread_local uint3 blockIdx{0, 0, 0};
inline thread_local dim3 blockDim{1, 1, 1};
inline thread_local dim3 gridDim{1, 1, 1};

// ---- runtime types ----------------------------------------------------------------------------
enum cudaError
{
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidDevicePointer = 17,
    cudaErrorInvalidResourceHandle = 400,
};
typedef enum cudaError cudaError_t;

enum cudaMemcpyKind
{
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4
};

struct CUstream_st
{
    int unused;
};
typedef struct CUstream_st* cudaStream_t;

struct CUevent_st
{
    std::chrono::steady_clock::time_point when;
};
typedef struct CUevent_st* cudaEvent_t;

// Dynamic shared memory: every `extern __shared__` array is bound here by --defsym.
constexpr size_t kCudaEmuDynSmemBytes = 48 * 1024; // the device's default limit without opt-in
// A weak definition in every translation unit; the linker keeps one. Hidden: the kernels address the
// extern __shared__ arrays PC-relative (the compiler takes them for local symbols).
extern "C" {
__attribute__((weak, visibility("hidden"), aligned(256))) unsigned char atfr_cuda_emu_dyn_smem[kCudaEmuDynSmemBytes];
}

namespace cuda_emu
{

inline thread_local cudaError_t tLastError = cudaSuccess;

inline cudaError_t record(cudaError_t e)
{
    if (e != cudaSuccess)
    {
        tLastError = e;
    }
    return e;
}

[[noreturn]] inline void fatal(char const* what)
{
    std::fprintf(stderr, "cuda_emu: %s\n", what);
    std::fflush(stderr);
    std::abort();
}

//! __syncthreads barrier of one block. `drop` is a thread leaving the kernel.
class BlockBarrier
{
public:
    explicit BlockBarrier(unsigned int n)
        : mSize(n)
        , mLive(n)
    {
    }

    void wait(void const* site)
    {
        std::unique_lock<std::mutex> lock(mMutex);
        if (mLive != mSize)
        {
            fatal("__syncthreads after a thread of the block returned (undefined on the device)");
        }
        if (mArrived == 0)
        {
            mSite = site;
        }
        else if (site != mSite)
        {
            fatal("divergent __syncthreads: threads of one block wait at different call sites");
        }
        uint64_t const gen = mGeneration;
        if (++mArrived == mLive)
        {
            release();
        }
        else
        {
            mCv.wait(lock, [&] { return mGeneration != gen; });
        }
    }

    void drop()
    {
        std::lock_guard<std::mutex> lock(mMutex);
        --mLive;
        if (mArrived != 0)
        {
            fatal("a thread returned while others wait at __syncthreads (undefined on the device)");
        }
    }

private:
    void release()
    {
        mArrived = 0;
        ++mGeneration;
        mCv.notify_all();
    }

    std::mutex mMutex;
    std::condition_variable mCv;
    unsigned int const mSize;
    unsigned int mLive;
    unsigned int mArrived{0};
    uint64_t mGeneration{0};
    void const* mSite{nullptr};
};

inline thread_local BlockBarrier* tBarrier = nullptr;

inline std::mutex& atomicMutex()
{
    static std::mutex m;
    return m;
}

//! Live cudaMalloc allocations (pointer -> bytes), for cudaFree and copy-range checks.
inline std::mutex& allocMutex()
{
    static std::mutex m;
    return m;
}
inline std::map<char const*, size_t>& allocations()
{
    static std::map<char const*, size_t> a;
    return a;
}

//! True when [p, p + n) lies inside one live allocation.
inline bool isDeviceRange(void const* p, size_t n)
{
    std::lock_guard<std::mutex> lock(allocMutex());
    auto const& a = allocations();
    char const* c = static_cast<char const*>(p);
    auto it = a.upper_bound(c);
    if (it == a.begin())
    {
        return false;
    }
    --it;
    return c >= it->first && c + n <= it->first + it->second;
}

//! The threads that run the blocks: created once, reused by every block of every launch (creating 128-256
//! threads per block made the ThreadSanitizer build ~10x slower). Never destroyed: its threads are
//! detached and parked on a condition variable when the process exits.
class ThreadPool
{
public:
    //! Runs job(0..n-1) on n pool threads and returns when all have finished.
    void run(unsigned int n, std::function<void(unsigned int)> const& job)
    {
        std::unique_lock<std::mutex> lock(mMutex);
        while (mWorkers < n)
        {
            std::thread(&ThreadPool::work, this, mWorkers++).detach();
        }
        mJob = &job;
        mActive = n;
        mRemaining = n;
        ++mGeneration;
        mStart.notify_all();
        mDone.wait(lock, [&] { return mRemaining == 0; });
        mJob = nullptr;
    }

    static ThreadPool& instance()
    {
        static ThreadPool* pool = new ThreadPool();
        return *pool;
    }

private:
    void work(unsigned int id)
    {
        uint64_t seen = 0;
        std::unique_lock<std::mutex> lock(mMutex);
        for (;;)
        {
            mStart.wait(lock, [&] { return mGeneration != seen; });
            seen = mGeneration;
            if (id >= mActive)
            {
                continue;
            }
            std::function<void(unsigned int)> const* job = mJob;
            lock.unlock();
            (*job)(id);
            lock.lock();
            if (--mRemaining == 0)
            {
                mDone.notify_one();
            }
        }
    }

    std::mutex mMutex;
    std::condition_variable mStart;
    std::condition_variable mDone;
    std::function<void(unsigned int)> const* mJob{nullptr};
    unsigned int mWorkers{0};
    unsigned int mActive{0};
    unsigned int mRemaining{0};
    uint64_t mGeneration{0};
};

template <typename Body>
cudaError_t launch(dim3 grid, dim3 block, size_t smem, Body const& body)
{
    uint64_t const nThreads = static_cast<uint64_t>(block.x) * block.y * block.z;
    if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 || grid.z > 65535 || grid.x > 0x7fffffffu
        || nThreads == 0 || nThreads > 1024 || block.z > 64)
    {
        return cudaErrorInvalidConfiguration;
    }
    if (smem > kCudaEmuDynSmemBytes)
    {
        return cudaErrorInvalidValue;
    }
    unsigned char* const dyn = atfr_cuda_emu_dyn_smem;
    for (unsigned int bz = 0; bz < grid.z; ++bz)
    {
        for (unsigned int by = 0; by < grid.y; ++by)
        {
            for (unsigned int bx = 0; bx < grid.x; ++bx)
            {
                // Fresh shared memory for every block: NaN bits, and no access past the launch size.
                CUDA_EMU_UNPOISON(dyn, kCudaEmuDynSmemBytes);
                uint32_t const nanWord = 0x7fffffffu;
                for (size_t i = 0; i + 4 <= smem; i += 4)
                {
                    std::memcpy(dyn + i, &nanWord, 4);
                }
                std::memset(dyn + (smem / 4) * 4, 0xff, smem % 4);
                CUDA_EMU_POISON(dyn + smem, kCudaEmuDynSmemBytes - smem);

                BlockBarrier barrier(static_cast<unsigned int>(nThreads));
                std::function<void(unsigned int)> const job = [&](unsigned int id) {
                    threadIdx = uint3{id % block.x, (id / block.x) % block.y, id / (block.x * block.y)};
                    blockIdx = uint3{bx, by, bz};
                    blockDim = block;
                    gridDim = grid;
                    tBarrier = &barrier;
                    body();
                    barrier.drop();
                    tBarrier = nullptr;
                };
                ThreadPool::instance().run(static_cast<unsigned int>(nThreads), job);
            }
        }
    }
    CUDA_EMU_UNPOISON(dyn, kCudaEmuDynSmemBytes);
    return cudaSuccess;
}

template <typename... P, size_t... I>
void invokeKernel(void (*kernel)(P...), void** args, std::index_sequence<I...>)
{
    kernel(*static_cast<std::remove_reference_t<P>*>(args[I])...);
}

} // namespace cuda_emu

// ---- device functions -------------------------------------------------------------------------
__attribute__((noinline)) inline void __syncthreads()
{
    if (cuda_emu::tBarrier == nullptr)
    {
        cuda_emu::fatal("__syncthreads outside a kernel launch");
    }
    cuda_emu::tBarrier->wait(__builtin_return_address(0));
}

inline float __fadd_rn(float a, float b)
{
    return a + b;
}
inline float __fsub_rn(float a, float b)
{
    return a - b;
}
inline float __fmul_rn(float a, float b)
{
    return a * b;
}
inline float __fdiv_rn(float a, float b)
{
    return a / b;
}

inline int min(int a, int b)
{
    return a < b ? a : b;
}
inline int max(int a, int b)
{
    return a > b ? a : b;
}
inline unsigned int min(unsigned int a, unsigned int b)
{
    return a < b ? a : b;
}
inline unsigned int max(unsigned int a, unsigned int b)
{
    return a > b ? a : b;
}
inline long long min(long long a, long long b)
{
    return a < b ? a : b;
}
inline long long max(long long a, long long b)
{
    return a > b ? a : b;
}

template <typename T>
inline T __ldg(T const* p)
{
    return *p;
}

inline int atomicMax(int* address, int value)
{
    std::lock_guard<std::mutex> lock(cuda_emu::atomicMutex());
    int const old = *address;
    *address = old > value ? old : value;
    return old;
}

inline int atomicAdd(int* address, int value)
{
    std::lock_guard<std::mutex> lock(cuda_emu::atomicMutex());
    int const old = *address;
    *address = old + value;
    return old;
}

// ---- fp16 -------------------------------------------------------------------------------------
typedef _Float16 __half;

inline float __half2float(__half h)
{
    return static_cast<float>(h);
}
inline __half __float2half_rn(float f)
{
    return static_cast<__half>(f);
}

// ---- runtime API ------------------------------------------------------------------------------
inline char const* cudaGetErrorString(cudaError_t e)
{
    switch (e)
    {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevicePointer: return "invalid device pointer";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    }
    return "unknown error";
}

inline cudaError_t cudaGetLastError()
{
    cudaError_t const e = cuda_emu::tLastError;
    cuda_emu::tLastError = cudaSuccess;
    return e;
}

inline cudaError_t cudaPeekAtLastError()
{
    return cuda_emu::tLastError;
}

inline cudaError_t cudaMalloc(void** ptr, size_t bytes)
{
    if (ptr == nullptr)
    {
        return cuda_emu::record(cudaErrorInvalidValue);
    }
    size_t const rounded = (bytes + 255) / 256 * 256;
    void* p = std::aligned_alloc(256, rounded == 0 ? 256 : rounded);
    if (p == nullptr)
    {
        return cuda_emu::record(cudaErrorMemoryAllocation);
    }
    std::memset(p, 0xff, bytes); // poison: NaN in fp32/fp16, -1 in int32
    {
        std::lock_guard<std::mutex> lock(cuda_emu::allocMutex());
        cuda_emu::allocations()[static_cast<char const*>(p)] = bytes;
    }
    CUDA_EMU_POISON(static_cast<char*>(p) + bytes, (rounded == 0 ? 256 : rounded) - bytes);
    *ptr = p;
    return cudaSuccess;
}

template <typename T>
inline cudaError_t cudaMalloc(T** ptr, size_t bytes)
{
    return cudaMalloc(reinterpret_cast<void**>(ptr), bytes);
}

inline cudaError_t cudaFree(void* ptr)
{
    if (ptr == nullptr)
    {
        return cudaSuccess;
    }
    size_t bytes = 0;
    {
        std::lock_guard<std::mutex> lock(cuda_emu::allocMutex());
        auto& a = cuda_emu::allocations();
        auto it = a.find(static_cast<char const*>(ptr));
        if (it == a.end())
        {
            return cuda_emu::record(cudaErrorInvalidDevicePointer);
        }
        bytes = it->second;
        a.erase(it);
    }
    size_t const rounded = (bytes + 255) / 256 * 256;
    CUDA_EMU_UNPOISON(ptr, rounded == 0 ? 256 : rounded);
    std::free(ptr);
    return cudaSuccess;
}

inline cudaError_t cudaMemcpy(void* dst, void const* src, size_t bytes, cudaMemcpyKind kind)
{
    if (bytes == 0)
    {
        return cudaSuccess;
    }
    bool const dstDev = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
    bool const srcDev = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
    if (dst == nullptr || src == nullptr || (dstDev && !cuda_emu::isDeviceRange(dst, bytes))
        || (srcDev && !cuda_emu::isDeviceRange(src, bytes)))
    {
        return cuda_emu::record(cudaErrorInvalidValue);
    }
    std::memcpy(dst, src, bytes);
    return cudaSuccess;
}

//! Pinned host allocations (cudaMallocHost), for the cudaMemcpyAsync rule below.
inline std::map<char const*, size_t>& pinnedAllocations()
{
    static std::map<char const*, size_t> a;
    return a;
}

inline cudaError_t cudaMallocHost(void** ptr, size_t bytes)
{
    if (ptr == nullptr)
    {
        return cuda_emu::record(cudaErrorInvalidValue);
    }
    *ptr = std::malloc(bytes == 0 ? 1 : bytes);
    std::lock_guard<std::mutex> lock(cuda_emu::allocMutex());
    pinnedAllocations()[static_cast<char const*>(*ptr)] = bytes;
    return *ptr ? cudaSuccess : cuda_emu::record(cudaErrorMemoryAllocation);
}

inline cudaError_t cudaFreeHost(void* ptr)
{
    {
        std::lock_guard<std::mutex> lock(cuda_emu::allocMutex());
        if (pinnedAllocations().erase(static_cast<char const*>(ptr)) == 0)
        {
            return cuda_emu::record(cudaErrorInvalidValue);
        }
    }
    std::free(ptr);
    return cudaSuccess;
}

inline bool isPinnedRange(void const* p, size_t n)
{
    std::lock_guard<std::mutex> lock(cuda_emu::allocMutex());
    auto const& a = pinnedAllocations();
    char const* c = static_cast<char const*>(p);
    auto it = a.upper_bound(c);
    if (it == a.begin())
    {
        return false;
    }
    --it;
    return c + n <= it->first + it->second;
}

//! Stricter than the device: an asynchronous copy between the device and pageable host memory is
//! refused. On the device it silently synchronizes (the copy is staged), and under CUDA graph capture
//! it records a pointer to host memory that may be gone (a stack variable) when the graph replays.
inline cudaError_t cudaMemcpyAsync(
    void* dst, void const* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t /*stream*/ = nullptr)
{
    if ((kind == cudaMemcpyHostToDevice && !isPinnedRange(src, bytes))
        || (kind == cudaMemcpyDeviceToHost && !isPinnedRange(dst, bytes)))
    {
        std::fprintf(stderr, "cuda_emu: cudaMemcpyAsync with pageable host memory (use cudaMallocHost memory, "
                             "or write the value on the device)\n");
        return cuda_emu::record(cudaErrorInvalidValue);
    }
    return cudaMemcpy(dst, src, bytes, kind);
}

inline cudaError_t cudaMemset(void* dst, int value, size_t bytes)
{
    if (bytes == 0)
    {
        return cudaSuccess;
    }
    if (!cuda_emu::isDeviceRange(dst, bytes))
    {
        return cuda_emu::record(cudaErrorInvalidValue);
    }
    std::memset(dst, value, bytes);
    return cudaSuccess;
}

inline cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t /*stream*/ = nullptr)
{
    return cudaMemset(dst, value, bytes);
}

inline cudaError_t cudaStreamCreate(cudaStream_t* stream)
{
    if (stream == nullptr)
    {
        return cuda_emu::record(cudaErrorInvalidValue);
    }
    *stream = new CUstream_st{0};
    return cudaSuccess;
}

inline cudaError_t cudaStreamDestroy(cudaStream_t stream)
{
    delete stream;
    return cudaSuccess;
}

inline cudaError_t cudaStreamSynchronize(cudaStream_t /*stream*/)
{
    return cudaSuccess; // everything ran when it was enqueued
}

inline cudaError_t cudaDeviceSynchronize()
{
    return cudaSuccess;
}

inline cudaError_t cudaEventCreate(cudaEvent_t* event)
{
    if (event == nullptr)
    {
        return cuda_emu::record(cudaErrorInvalidValue);
    }
    *event = new CUevent_st{std::chrono::steady_clock::now()};
    return cudaSuccess;
}

inline cudaError_t cudaEventDestroy(cudaEvent_t event)
{
    delete event;
    return cudaSuccess;
}

inline cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t /*stream*/ = nullptr)
{
    if (event == nullptr)
    {
        return cuda_emu::record(cudaErrorInvalidResourceHandle);
    }
    event->when = std::chrono::steady_clock::now();
    return cudaSuccess;
}

inline cudaError_t cudaEventSynchronize(cudaEvent_t /*event*/)
{
    return cudaSuccess;
}

inline cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t stop)
{
    if (ms == nullptr || start == nullptr || stop == nullptr)
    {
        return cuda_emu::record(cudaErrorInvalidValue);
    }
    *ms = std::chrono::duration<float, std::milli>(stop->when - start->when).count();
    return cudaSuccess;
}

//! The runtime's C++ launch API: the kernel's parameters are read through `args` (one pointer per
//! parameter, in order), exactly as cudaLaunchKernel does.
template <typename... P>
inline cudaError_t cudaLaunchKernel(
    void (*kernel)(P...), dim3 grid, dim3 block, void** args, size_t smem = 0, cudaStream_t /*stream*/ = nullptr)
{
    if (kernel == nullptr || (sizeof...(P) > 0 && args == nullptr))
    {
        return cuda_emu::record(cudaErrorInvalidValue);
    }
    return cuda_emu::record(cuda_emu::launch(
        grid, block, smem, [&] { cuda_emu::invokeKernel(kernel, args, std::index_sequence_for<P...>{}); }));
}

#endif // ATFR_CUDA_EMU_H
