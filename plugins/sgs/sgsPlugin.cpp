/*
 * ATFR SGS TensorRT plugin (IPluginV3 / IPluginCreatorV3One). See sgsPlugin.h and README.md.
 */
#include "sgsPlugin.h"
#include "sgsKernel.h"
#include "sgsMath.h"

#include <cstdio>
#include <cstring>
#include <exception>
#include <mutex>
#include <string>

using namespace nvinfer1;

namespace atfr
{
namespace sgs
{

// ---- logging -------------------------------------------------------------------------------
namespace
{
std::mutex gLoggerMutex;
ILoggerFinder* gLoggerFinder{nullptr};

constexpr char const* kFieldNumBins = "num_bins";
constexpr char const* kFieldKernel = "kernel";
constexpr char const* kFieldNormalize = "normalize";
constexpr char const* kFieldDropBins = "drop_bins";
constexpr char const* kFieldGuardZero = "guard_zero";

constexpr int32_t kIN_FEAT = 0;
constexpr int32_t kIN_DIST = 1;
constexpr int32_t kOUT_Y = 2;      // position in the in/out list of supportsFormatCombination
constexpr int32_t kOUT_BPRIME = 3; // ditto
constexpr int32_t kNB_INPUTS = 2;
constexpr int32_t kNB_OUTPUTS = 2;

//! B from the field and the (runtime or max) T.
int64_t resolveBins(int32_t numBins, int64_t T)
{
    return numBins == -1 ? T : static_cast<int64_t>(numBins);
}

//! Read one integer plugin field (the ONNX parser passes INT attributes as kINT32; other integer
//! widths are accepted for hand-built networks).
bool readIntField(PluginField const& f, int32_t& value)
{
    if (f.data == nullptr || f.length < 1)
    {
        return false;
    }
    switch (f.type)
    {
    case PluginFieldType::kINT32: value = *static_cast<int32_t const*>(f.data); return true;
    case PluginFieldType::kINT64: value = static_cast<int32_t>(*static_cast<int64_t const*>(f.data)); return true;
    case PluginFieldType::kINT16: value = *static_cast<int16_t const*>(f.data); return true;
    case PluginFieldType::kINT8: value = *static_cast<int8_t const*>(f.data); return true;
    default: return false;
    }
}
} // namespace

void setSgsLoggerFinder(ILoggerFinder* finder) noexcept
{
    std::lock_guard<std::mutex> lock(gLoggerMutex);
    if (gLoggerFinder == nullptr && finder != nullptr)
    {
        gLoggerFinder = finder;
    }
}

void sgsLogError(char const* msg) noexcept
{
    try
    {
        std::string const text = std::string("[atfr::SGS] ") + msg;
        ILogger* logger = nullptr;
        {
            std::lock_guard<std::mutex> lock(gLoggerMutex);
            if (gLoggerFinder != nullptr)
            {
                logger = gLoggerFinder->findLogger();
            }
        }
        if (logger != nullptr)
        {
            logger->log(ILogger::Severity::kERROR, text.c_str());
        }
        else
        {
            std::fprintf(stderr, "%s\n", text.c_str());
        }
    }
    catch (...)
    {
    }
}

std::string SgsFields::validate() const
{
    if (numBins == 0 || numBins < -1)
    {
        return "num_bins must be -1 (B = T) or >= 1, got " + std::to_string(numBins);
    }
    if (kernel != kLINEAR && kernel != kDELTA)
    {
        return "kernel must be 0 (linear) or 1 (delta), got " + std::to_string(kernel);
    }
    if ((normalize != 0 && normalize != 1) || (dropBins != 0 && dropBins != 1) || (guardZero != 0 && guardZero != 1))
    {
        return "normalize, drop_bins and guard_zero must be 0 or 1";
    }
    return {};
}

// ---- SgsPlugin -----------------------------------------------------------------------------
SgsPlugin::SgsPlugin(SgsFields const& fields)
    : mFields(fields)
{
}

SgsPlugin::SgsPlugin(SgsPlugin const& other)
    : IPluginV3()
    , IPluginV3OneCore()
    , IPluginV3OneBuild()
    , IPluginV3OneRuntime()
    , mFields(other.mFields)
{
    // mSerialFields / mSerialFc point into *this and are rebuilt by getFieldsToSerialize().
}

IPluginCapability* SgsPlugin::getCapabilityInterface(PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
    case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
    case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
    }
    return nullptr;
}

IPluginV3* SgsPlugin::clone() noexcept
{
    try
    {
        return new SgsPlugin(*this);
    }
    catch (std::exception const& e)
    {
        sgsLogError(e.what());
    }
    return nullptr;
}

char const* SgsPlugin::getPluginName() const noexcept
{
    return kSGS_PLUGIN_NAME;
}

char const* SgsPlugin::getPluginVersion() const noexcept
{
    return kSGS_PLUGIN_VERSION;
}

char const* SgsPlugin::getPluginNamespace() const noexcept
{
    return kSGS_PLUGIN_NAMESPACE;
}

int32_t SgsPlugin::getNbOutputs() const noexcept
{
    return kNB_OUTPUTS;
}

int32_t SgsPlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    if (in == nullptr || out == nullptr || nbInputs != kNB_INPUTS || nbOutputs != kNB_OUTPUTS)
    {
        sgsLogError("SGS expects 2 inputs (feat, dist) and 2 outputs (out, bprime)");
        return -1;
    }
    if (in[kIN_FEAT].desc.dims.nbDims != 5 || in[kIN_DIST].desc.dims.nbDims != 2)
    {
        sgsLogError("SGS expects feat [N,C,T,H,W] and dist [N,T]");
        return -1;
    }
    return 0;
}

int32_t SgsPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (outputTypes == nullptr || inputTypes == nullptr || nbOutputs != kNB_OUTPUTS || nbInputs != kNB_INPUTS)
    {
        return -1;
    }
    if ((inputTypes[kIN_FEAT] != DataType::kFLOAT && inputTypes[kIN_FEAT] != DataType::kHALF)
        || inputTypes[kIN_DIST] != DataType::kFLOAT)
    {
        sgsLogError("SGS supports feat fp32/fp16 and dist fp32 only");
        return -1;
    }
    outputTypes[0] = inputTypes[kIN_FEAT];
    outputTypes[1] = DataType::kINT32; // the size tensor B'
    return 0;
}

int32_t SgsPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /*shapeInputs*/,
    int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs, IExprBuilder& exprBuilder) noexcept
{
    try
    {
        if (inputs == nullptr || outputs == nullptr || nbInputs != kNB_INPUTS || nbOutputs != kNB_OUTPUTS
            || inputs[kIN_FEAT].nbDims != 5 || inputs[kIN_DIST].nbDims != 2)
        {
            sgsLogError("getOutputShapes: expected feat [N,C,T,H,W] and dist [N,T]");
            return -1;
        }
        DimsExprs const& x = inputs[kIN_FEAT];
        // B: the runtime T when num_bins == -1, otherwise the constant.
        IDimensionExpr const* upper
            = mFields.numBins == -1 ? x.d[2] : exprBuilder.constant(static_cast<int64_t>(mFields.numBins));
        IDimensionExpr const* bPrime = upper;
        if (mFields.dropBins)
        {
            // Data-dependent B' in [0, B]. opt (the value TensorRT tunes for) = ceil(B/2): the golden
            // model layers keep 25-45% of B on real-looking clips (8-12 of 32, 2-3 of 4, 7-14 of 32),
            // and ceil(B/2) is the largest of those rounded up, without depending on the data.
            IDimensionExpr const* opt
                = exprBuilder.operation(DimensionOperation::kCEIL_DIV, *upper, *exprBuilder.constant(2));
            bPrime = exprBuilder.declareSizeTensor(1, *opt, *upper);
            if (bPrime == nullptr)
            {
                sgsLogError("declareSizeTensor failed");
                return -1;
            }
        }
        // drop_bins == 0: B' == B is known at build time; the size output is still written (= B).
        outputs[0].nbDims = 5;
        outputs[0].d[0] = x.d[0];
        outputs[0].d[1] = x.d[1];
        outputs[0].d[2] = bPrime;
        outputs[0].d[3] = x.d[3];
        outputs[0].d[4] = x.d[4];
        outputs[1].nbDims = 0; // 0-D INT32 size tensor
        return 0;
    }
    catch (std::exception const& e)
    {
        sgsLogError(e.what());
    }
    return -1;
}

bool SgsPlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (inOut == nullptr || nbInputs != kNB_INPUTS || nbOutputs != kNB_OUTPUTS || pos < 0
        || pos >= kNB_INPUTS + kNB_OUTPUTS)
    {
        return false;
    }
    PluginTensorDesc const& d = inOut[pos].desc;
    if (d.format != TensorFormat::kLINEAR)
    {
        return false;
    }
    switch (pos)
    {
    case kIN_FEAT: return d.type == DataType::kFLOAT || d.type == DataType::kHALF;
    case kIN_DIST: return d.type == DataType::kFLOAT;
    case kOUT_Y: return d.type == inOut[kIN_FEAT].desc.type;
    case kOUT_BPRIME: return d.type == DataType::kINT32;
    default: return false;
    }
}

size_t SgsPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
    DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept
{
    if (inputs == nullptr || nbInputs != kNB_INPUTS || inputs[kIN_FEAT].max.nbDims != 5)
    {
        return 0;
    }
    // Sized from the profile maximum: valid for every smaller shape of the profile.
    int64_t const n = inputs[kIN_FEAT].max.d[0];
    int64_t const t = inputs[kIN_FEAT].max.d[2];
    int64_t const b = resolveBins(mFields.numBins, t);
    if (n <= 0 || t <= 0 || b <= 0)
    {
        return 0;
    }
    return sgsWorkspaceSize(static_cast<int32_t>(n), static_cast<int32_t>(t), static_cast<int32_t>(b));
}

int32_t SgsPlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    if (in == nullptr || out == nullptr || nbInputs != kNB_INPUTS || nbOutputs != kNB_OUTPUTS)
    {
        return -1;
    }
    Dims const& x = in[kIN_FEAT].dims;
    Dims const& d = in[kIN_DIST].dims;
    if (x.nbDims != 5 || d.nbDims != 2 || d.d[0] != x.d[0] || d.d[1] != x.d[2])
    {
        sgsLogError("onShapeChange: dist must be [N,T] for feat [N,C,T,H,W]");
        return -1;
    }
    return 0;
}

int32_t SgsPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    if (inputDesc == nullptr || inputs == nullptr || outputs == nullptr)
    {
        return -1;
    }
    Dims const& x = inputDesc[kIN_FEAT].dims;
    int32_t* bprime = static_cast<int32_t*>(outputs[1]);
    SgsParams p;
    p.N = static_cast<int32_t>(x.d[0]);
    p.C = static_cast<int32_t>(x.d[1]);
    p.T = static_cast<int32_t>(x.d[2]);
    p.HW = static_cast<int64_t>(x.d[3]) * x.d[4];
    p.B = static_cast<int32_t>(resolveBins(mFields.numBins, x.d[2]));
    p.kernel = mFields.kernel;
    p.normalize = mFields.normalize;
    p.dropBins = mFields.dropBins;
    p.guardZero = mFields.guardZero;

    // N == 0 (empty batch) is handled by sgsForward: it writes B' on the stream from the device
    // (formerly a cudaMemcpyAsync from a stack variable: pageable, so a hidden sync, and a dangling
    // pointer when the enqueue is captured into a CUDA graph).
    if (p.N > 0 && (p.T <= 0 || p.B <= 0 || workspace == nullptr))
    {
        sgsLogError("enqueue: T and B must be >= 1 and a workspace is required");
        return -1;
    }
    bool const half = inputDesc[kIN_FEAT].type == DataType::kHALF;
    cudaError_t const err = sgsForward(p, inputs[kIN_FEAT], half, static_cast<float const*>(inputs[kIN_DIST]),
        outputs[0], bprime, workspace, stream);
    if (err != cudaSuccess)
    {
        sgsLogError(cudaGetErrorString(err));
        return -1;
    }
    return 0;
}

IPluginV3* SgsPlugin::attachToContext(IPluginResourceContext* /*context*/) noexcept
{
    return clone();
}

PluginFieldCollection const* SgsPlugin::getFieldsToSerialize() noexcept
{
    mSerialFields.clear();
    mSerialFields.emplace_back(kFieldNumBins, &mFields.numBins, PluginFieldType::kINT32, 1);
    mSerialFields.emplace_back(kFieldKernel, &mFields.kernel, PluginFieldType::kINT32, 1);
    mSerialFields.emplace_back(kFieldNormalize, &mFields.normalize, PluginFieldType::kINT32, 1);
    mSerialFields.emplace_back(kFieldDropBins, &mFields.dropBins, PluginFieldType::kINT32, 1);
    mSerialFields.emplace_back(kFieldGuardZero, &mFields.guardZero, PluginFieldType::kINT32, 1);
    mSerialFc.nbFields = static_cast<int32_t>(mSerialFields.size());
    mSerialFc.fields = mSerialFields.data();
    return &mSerialFc;
}

// ---- SgsPluginCreator ----------------------------------------------------------------------
SgsPluginCreator::SgsPluginCreator()
{
    mFieldNames.emplace_back(kFieldNumBins, nullptr, PluginFieldType::kINT32, 1);
    mFieldNames.emplace_back(kFieldKernel, nullptr, PluginFieldType::kINT32, 1);
    mFieldNames.emplace_back(kFieldNormalize, nullptr, PluginFieldType::kINT32, 1);
    mFieldNames.emplace_back(kFieldDropBins, nullptr, PluginFieldType::kINT32, 1);
    mFieldNames.emplace_back(kFieldGuardZero, nullptr, PluginFieldType::kINT32, 1);
    mFc.nbFields = static_cast<int32_t>(mFieldNames.size());
    mFc.fields = mFieldNames.data();
}

IPluginV3* SgsPluginCreator::createPlugin(
    char const* /*name*/, PluginFieldCollection const* fc, TensorRTPhase /*phase*/) noexcept
{
    try
    {
        // Defaults = the official semantics (num_bins -1, linear, no normalization, drop empty bins,
        // no zero guard). Build (ONNX attributes) and runtime (getFieldsToSerialize) use the same fields.
        SgsFields f;
        if (fc != nullptr)
        {
            for (int32_t i = 0; i < fc->nbFields; ++i)
            {
                PluginField const& field = fc->fields[i];
                if (field.name == nullptr)
                {
                    continue;
                }
                int32_t* target = nullptr;
                if (std::strcmp(field.name, kFieldNumBins) == 0)
                {
                    target = &f.numBins;
                }
                else if (std::strcmp(field.name, kFieldKernel) == 0)
                {
                    target = &f.kernel;
                }
                else if (std::strcmp(field.name, kFieldNormalize) == 0)
                {
                    target = &f.normalize;
                }
                else if (std::strcmp(field.name, kFieldDropBins) == 0)
                {
                    target = &f.dropBins;
                }
                else if (std::strcmp(field.name, kFieldGuardZero) == 0)
                {
                    target = &f.guardZero;
                }
                if (target != nullptr && !readIntField(field, *target))
                {
                    sgsLogError((std::string("field '") + field.name + "' must be a single integer").c_str());
                    return nullptr;
                }
            }
        }
        std::string const problem = f.validate();
        if (!problem.empty())
        {
            sgsLogError(problem.c_str());
            return nullptr;
        }
        return new SgsPlugin(f);
    }
    catch (std::exception const& e)
    {
        sgsLogError(e.what());
    }
    return nullptr;
}

PluginFieldCollection const* SgsPluginCreator::getFieldNames() noexcept
{
    return &mFc;
}

char const* SgsPluginCreator::getPluginName() const noexcept
{
    return kSGS_PLUGIN_NAME;
}

char const* SgsPluginCreator::getPluginVersion() const noexcept
{
    return kSGS_PLUGIN_VERSION;
}

char const* SgsPluginCreator::getPluginNamespace() const noexcept
{
    return kSGS_PLUGIN_NAMESPACE;
}

} // namespace sgs
} // namespace atfr
