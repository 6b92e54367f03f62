/*
 * The SGS plugin class (plugins/sgs/sgsPlugin.cpp) on the CPU emulation: what TensorRT would call at
 * build and run time, without TensorRT. Needs the TensorRT headers only (the plugin classes are
 * header-only interfaces); built by tests/test_plugin_sources.py when ATFR_TRT_INCLUDE is set:
 *
 *   g++ -x c++ -include cuda_emu.h -I tests/cuda_emu -I plugins/sgs -isystem <trt>/include
 *       sgsKernel.cu sgsHarness.cu sgsPlugin.cpp plugin_enqueue_check.cpp (+ --defsym of the shared arrays)
 *
 * For each configuration: the creator builds the plugin from ONNX-like fields; getOutputDataTypes,
 * supportsFormatCombination, configurePlugin and onShapeChange accept the shapes; enqueue runs on
 * poisoned device buffers with a workspace of exactly getWorkspaceSize bytes (so the ASan build
 * catches an undersized workspace); B' and the output must equal, byte for byte, what
 * atfr_sgs_forward (the harness the golden tests check) computes from the same inputs. Also: the
 * empty batch (N = 0, no workspace) writes B' = 0 or B from the device (the emulation refuses the former
 * cudaMemcpyAsync from a stack variable), an unrelated earlier CUDA error is neither reported nor
 * cleared by enqueue, and bad shapes are refused.
 * Exit status 0 and "OK enqueue" on success; the first failure prints FAIL and exits 1.
 */
#include "sgsKernel.h"
#include "sgsPlugin.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

using namespace nvinfer1;

extern "C" int atfr_sgs_forward(void const* feat, int feat_is_half, float const* dist, int n, int c, int t, int h,
    int w, int num_bins, int kernel, int normalize, int drop_bins, int guard_zero, void* out, int* bprime,
    int* k_per_sample, float* kernel_compact, float* kernel_raw, float* scaled, float* centers, float* width);

namespace
{
void require(bool ok, std::string const& what)
{
    if (!ok)
    {
        std::fprintf(stderr, "FAIL: %s\n", what.c_str());
        std::exit(1);
    }
}

struct Config
{
    int n, c, t, h, w, numBins, kernel, normalize, drop, guard;
    bool half;
};

Dims dims(std::vector<int64_t> const& v)
{
    Dims d{};
    d.nbDims = static_cast<int32_t>(v.size());
    for (size_t i = 0; i < v.size(); ++i)
    {
        d.d[i] = v[i];
    }
    return d;
}

PluginTensorDesc desc(Dims const& d, DataType type)
{
    PluginTensorDesc p{};
    p.dims = d;
    p.type = type;
    p.format = TensorFormat::kLINEAR;
    p.scale = -1.0F;
    return p;
}

void* deviceCopy(void const* host, size_t bytes)
{
    void* d = nullptr;
    require(cudaMalloc(&d, bytes) == cudaSuccess, "cudaMalloc");
    if (bytes != 0)
    {
        require(cudaMemcpy(d, host, bytes, cudaMemcpyHostToDevice) == cudaSuccess, "cudaMemcpy H2D");
    }
    return d;
}

void runConfig(IPluginCreatorV3One& creator, Config const& cfg, unsigned seed)
{
    std::string const tag = "N=" + std::to_string(cfg.n) + " C=" + std::to_string(cfg.c) + " T=" + std::to_string(cfg.t)
        + " HW=" + std::to_string(cfg.h) + "x" + std::to_string(cfg.w) + " num_bins=" + std::to_string(cfg.numBins)
        + " kernel=" + std::to_string(cfg.kernel) + " normalize=" + std::to_string(cfg.normalize)
        + " drop=" + std::to_string(cfg.drop) + (cfg.half ? " fp16" : " fp32");
    PluginField fields[] = {{"num_bins", &cfg.numBins, PluginFieldType::kINT32, 1},
        {"kernel", &cfg.kernel, PluginFieldType::kINT32, 1}, {"normalize", &cfg.normalize, PluginFieldType::kINT32, 1},
        {"drop_bins", &cfg.drop, PluginFieldType::kINT32, 1}, {"guard_zero", &cfg.guard, PluginFieldType::kINT32, 1}};
    PluginFieldCollection fc{5, fields};
    IPluginV3* plugin = creator.createPlugin("sgs", &fc, TensorRTPhase::kBUILD);
    require(plugin != nullptr, tag + ": createPlugin");
    auto* build = static_cast<IPluginV3OneBuild*>(plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
    auto* runtime = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    require(build != nullptr && runtime != nullptr, tag + ": capabilities");

    DataType const ft = cfg.half ? DataType::kHALF : DataType::kFLOAT;
    int const B = cfg.numBins == -1 ? cfg.t : cfg.numBins;
    DataType inTypes[2] = {ft, DataType::kFLOAT};
    DataType outTypes[2] = {DataType::kBOOL, DataType::kBOOL};
    require(build->getOutputDataTypes(outTypes, 2, inTypes, 2) == 0 && outTypes[0] == ft
            && outTypes[1] == DataType::kINT32,
        tag + ": getOutputDataTypes");

    Dims const x = dims({cfg.n, cfg.c, cfg.t, cfg.h, cfg.w});
    Dims const d = dims({cfg.n, cfg.t});
    Dims const y = dims({cfg.n, cfg.c, B, cfg.h, cfg.w});
    DynamicPluginTensorDesc io[4]{};
    io[0].desc = desc(x, ft);
    io[1].desc = desc(d, DataType::kFLOAT);
    io[2].desc = desc(y, ft);
    io[3].desc = desc(dims({}), DataType::kINT32);
    for (auto& e : io)
    {
        e.min = e.max = e.opt = e.desc.dims;
    }
    for (int pos = 0; pos < 4; ++pos)
    {
        require(build->supportsFormatCombination(pos, io, 2, 2), tag + ": supportsFormatCombination pos " + std::to_string(pos));
    }
    DynamicPluginTensorDesc bad[4] = {io[0], io[1], io[2], io[3]};
    bad[1].desc.type = DataType::kHALF; // Δ must stay fp32 (the ghost-bin weight 2^-23 underflows in fp16)
    require(!build->supportsFormatCombination(1, bad, 2, 2), tag + ": fp16 dist refused");
    require(build->configurePlugin(io, 2, io + 2, 2) == 0, tag + ": configurePlugin");
    size_t const wsBytes = build->getWorkspaceSize(io, 2, io + 2, 2);

    PluginTensorDesc in[2] = {io[0].desc, io[1].desc};
    PluginTensorDesc out[2] = {io[2].desc, io[3].desc};
    require(runtime->onShapeChange(in, 2, out, 2) == 0, tag + ": onShapeChange");
    PluginTensorDesc wrong[2] = {in[0], desc(dims({cfg.n, cfg.t + 1}), DataType::kFLOAT)};
    require(runtime->onShapeChange(wrong, 2, out, 2) != 0, tag + ": onShapeChange refuses dist [N, T+1]");

    // Inputs: deterministic pseudo-random features and distances with some exact ties.
    size_t const elem = cfg.half ? 2 : 4;
    size_t const featN = static_cast<size_t>(cfg.n) * cfg.c * cfg.t * cfg.h * cfg.w;
    size_t const outN = static_cast<size_t>(cfg.n) * cfg.c * B * cfg.h * cfg.w;
    std::vector<unsigned char> feat(elem * featN + 1);
    std::vector<float> dist(static_cast<size_t>(cfg.n) * cfg.t + 1);
    unsigned s = seed;
    auto next = [&s]() {
        s = s * 1664525u + 1013904223u;
        return static_cast<float>((s >> 8) & 0xffff) / 65536.0f;
    };
    for (size_t i = 0; i < featN; ++i)
    {
        float const v = next() * 4.0f - 2.0f;
        if (cfg.half)
        {
            __half const hv = __float2half_rn(v);
            std::memcpy(&feat[2 * i], &hv, 2);
        }
        else
        {
            std::memcpy(&feat[4 * i], &v, 4);
        }
    }
    for (size_t i = 0; i + 1 < dist.size(); ++i)
    {
        dist[i] = (i % 3 == 0) ? 0.5f : next() * 3.0f;
    }

    // Reference: the harness entry point (checked against the golden cases by the emulated tests).
    std::vector<unsigned char> refOut(elem * outN + 1);
    int refBp = -1;
    require(atfr_sgs_forward(feat.data(), cfg.half, dist.data(), cfg.n, cfg.c, cfg.t, cfg.h, cfg.w, cfg.numBins,
                cfg.kernel, cfg.normalize, cfg.drop, cfg.guard, refOut.data(), &refBp, nullptr, nullptr, nullptr,
                nullptr, nullptr, nullptr)
            == 0,
        tag + ": atfr_sgs_forward");

    // enqueue on device buffers (poisoned by cudaMalloc), workspace exactly as requested.
    void* dFeat = deviceCopy(feat.data(), elem * featN);
    void* dDist = deviceCopy(dist.data(), sizeof(float) * cfg.n * cfg.t);
    void* dOut = nullptr;
    void* dBp = nullptr;
    void* dWs = nullptr;
    require(cudaMalloc(&dOut, elem * outN) == cudaSuccess && cudaMalloc(&dBp, sizeof(int32_t)) == cudaSuccess
            && cudaMalloc(&dWs, wsBytes) == cudaSuccess,
        tag + ": cudaMalloc");
    void const* inputs[2] = {dFeat, dDist};
    void* outputs[2] = {dOut, dBp};
    // An unrelated error left by earlier work in the process (another layer, the application): enqueue
    // must neither report it as its own failure nor clear it (the former cudaGetLastError() after each
    // launch did both).
    require(cudaFree(reinterpret_cast<void*>(0x10)) == cudaErrorInvalidDevicePointer, tag + ": provoke an error");
    require(runtime->enqueue(in, out, inputs, outputs, cfg.n == 0 ? nullptr : dWs, nullptr) == 0, tag + ": enqueue");
    require(cudaPeekAtLastError() == cudaErrorInvalidDevicePointer, tag + ": enqueue cleared an unrelated earlier error");
    cudaGetLastError();
    int32_t bp = -1;
    require(cudaMemcpy(&bp, dBp, sizeof(bp), cudaMemcpyDeviceToHost) == cudaSuccess, tag + ": B' copy");
    require(bp == refBp, tag + ": enqueue B' " + std::to_string(bp) + " != harness " + std::to_string(refBp));
    if (cfg.n == 0)
    {
        require(bp == (cfg.drop ? 0 : B), tag + ": empty batch B'");
    }
    size_t const used = elem * static_cast<size_t>(cfg.n) * cfg.c * bp * cfg.h * cfg.w;
    std::vector<unsigned char> got(used + 1);
    require(cudaMemcpy(got.data(), dOut, used, cudaMemcpyDeviceToHost) == cudaSuccess, tag + ": output copy");
    require(std::memcmp(got.data(), refOut.data(), used) == 0, tag + ": enqueue output != harness output");
    for (void* p : {dFeat, dDist, dOut, dBp, dWs})
    {
        cudaFree(p);
    }
    delete plugin;
    std::printf("ok: %s (B' = %d, workspace %zu bytes)\n", tag.c_str(), bp, wsBytes);
}
} // namespace

int main()
{
    atfr::sgs::SgsPluginCreator creator;
    Config const configs[] = {
        {2, 3, 16, 4, 5, -1, 0, 0, 1, 1, false}, // linear, B = T, drop, guard_zero as the exporter sets it
        {3, 2, 13, 3, 3, 7, 1, 1, 1, 1, true},   // delta_normalized, B not a power of two, fp16 features
        {1, 4, 40, 2, 3, -1, 0, 1, 0, 1, false}, // no dropping: B' = B, two bin tiles
        {1, 2, 400, 2, 2, 40, 0, 0, 1, 1, true}, // T = 400: global-memory weight path, fp16
        {0, 3, 8, 2, 2, -1, 0, 0, 1, 1, false},  // empty batch, drop: B' = 0
        {0, 3, 8, 2, 2, 5, 1, 0, 0, 1, true},    // empty batch, no drop: B' = B
    };
    unsigned seed = 12345;
    for (Config const& cfg : configs)
    {
        runConfig(creator, cfg, seed++);
    }
    std::printf("OK enqueue\n");
    return 0;
}
