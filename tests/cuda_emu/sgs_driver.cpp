/*
 * Pipe driver around atfr_sgs_forward (plugins/sgs/sgsHarness.cu) for the sanitizer builds of the
 * CPU-emulated kernels. ThreadSanitizer cannot be preloaded into Python, so tests/cuda_tools.py
 * (DriverHarness) starts this executable once and sends it the same forwards the ctypes harness
 * gets, over stdin/stdout, little-endian native layout:
 *
 *   request: int32[12] = {magic 0x53475331, feat_is_half, n, c, t, h, w, num_bins, kernel,
 *                         normalize, drop_bins, guard_zero}, feat bytes (2 or 4 * n*c*t*h*w),
 *            dist float32[n*t]
 *   reply:   int32 rc, int32 bprime, then (rc == 0 only) k int32[n], kernel_compact float32[n*B*t],
 *            kernel_raw float32[n*B*t], scaled float32[n*t], centers float32[n*B], width float32[n],
 *            out (feat element size * n*c*bprime*h*w bytes)
 *
 * End of input ends the driver with status 0.
 */
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

extern "C" int atfr_sgs_forward(void const* feat, int feat_is_half, float const* dist, int n, int c, int t, int h,
    int w, int num_bins, int kernel, int normalize, int drop_bins, int guard_zero, void* out, int* bprime,
    int* k_per_sample, float* kernel_compact, float* kernel_raw, float* scaled, float* centers, float* width);

namespace
{
constexpr int32_t kMagic = 0x53475331;

bool readAll(void* dst, size_t bytes)
{
    return bytes == 0 || std::fread(dst, 1, bytes, stdin) == bytes;
}

void writeAll(void const* src, size_t bytes)
{
    if (bytes != 0 && std::fwrite(src, 1, bytes, stdout) != bytes)
    {
        std::fprintf(stderr, "sgs_driver: write failed\n");
        std::exit(3);
    }
}
} // namespace

int main()
{
    int32_t hdr[12];
    while (std::fread(hdr, sizeof(hdr), 1, stdin) == 1)
    {
        if (hdr[0] != kMagic)
        {
            std::fprintf(stderr, "sgs_driver: bad request header\n");
            return 2;
        }
        int const half = hdr[1], n = hdr[2], c = hdr[3], t = hdr[4], h = hdr[5], w = hdr[6], numBins = hdr[7];
        if (n < 0 || c < 0 || t < 1 || h < 0 || w < 0 || (numBins != -1 && numBins < 1))
        {
            std::fprintf(stderr, "sgs_driver: bad sizes\n");
            return 2;
        }
        size_t const elem = half ? 2 : 4;
        size_t const b = numBins == -1 ? t : numBins;
        size_t const featElems = static_cast<size_t>(n) * c * t * h * w;
        size_t const nbt = static_cast<size_t>(n) * b * t;
        // +1: never hand a null pointer for an empty tensor (the harness rejects null).
        std::vector<unsigned char> feat(elem * featElems + 1), out(elem * static_cast<size_t>(n) * c * b * h * w + 1);
        std::vector<float> dist(static_cast<size_t>(n) * t + 1), kc(nbt + 1), kr(nbt + 1),
            scaled(static_cast<size_t>(n) * t + 1), centers(static_cast<size_t>(n) * b + 1), width(n + 1);
        std::vector<int> k(n + 1);
        if (!readAll(feat.data(), elem * featElems) || !readAll(dist.data(), sizeof(float) * n * t))
        {
            std::fprintf(stderr, "sgs_driver: truncated request\n");
            return 2;
        }
        int bprime = -1;
        int32_t const rc = atfr_sgs_forward(feat.data(), half, dist.data(), n, c, t, h, w, numBins, hdr[8], hdr[9],
            hdr[10], hdr[11], out.data(), &bprime, k.data(), kc.data(), kr.data(), scaled.data(), centers.data(),
            width.data());
        int32_t const reply[2] = {rc, bprime};
        writeAll(reply, sizeof(reply));
        if (rc == 0)
        {
            writeAll(k.data(), sizeof(int) * n);
            writeAll(kc.data(), sizeof(float) * nbt);
            writeAll(kr.data(), sizeof(float) * nbt);
            writeAll(scaled.data(), sizeof(float) * n * t);
            writeAll(centers.data(), sizeof(float) * n * b);
            writeAll(width.data(), sizeof(float) * n);
            writeAll(out.data(), elem * static_cast<size_t>(n) * c * (bprime > 0 ? bprime : 0) * h * w);
        }
        std::fflush(stdout);
    }
    return 0;
}
