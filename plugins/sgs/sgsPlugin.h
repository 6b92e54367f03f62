/*
 * ATFR SGS TensorRT plugin (IPluginV3). Name "SGS", version "1", namespace "atfr".
 *
 * Inputs : feat [N,C,T,H,W] fp32|fp16 (LINEAR), dist [N,T] fp32.
 * Outputs: out  [N,C,B',H,W] same type as feat, bprime 0-D INT32 size tensor (= B').
 * Fields (kINT32, one value each): num_bins (-1 = T), kernel (0 linear, 1 delta), normalize (0/1),
 *                                 drop_bins (0/1), guard_zero (0/1).
 *
 * Written against the TensorRT 10.3 headers (JetPack 6.1/6.2) using only API that still exists in
 * 11.x; include NvInferRuntime.h only.
 */
#ifndef ATFR_SGS_PLUGIN_H
#define ATFR_SGS_PLUGIN_H

#include "NvInferRuntime.h"
#include "sgsPluginId.h"

#include <cstdint>
#include <string>
#include <vector>

namespace atfr
{
namespace sgs
{

struct SgsFields
{
    int32_t numBins{-1};
    int32_t kernel{0};
    int32_t normalize{0};
    int32_t dropBins{1};
    int32_t guardZero{0};

    //! Empty string when valid, otherwise a description of the problem.
    std::string validate() const;
};

//! Route plugin diagnostics to the logger TensorRT hands to the dynamic (vc) library; the static
//! library has no logger finder and prints to stderr.
void setSgsLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept;
void sgsLogError(char const* msg) noexcept;

class SgsPlugin : public nvinfer1::IPluginV3,
                  public nvinfer1::IPluginV3OneCore,
                  public nvinfer1::IPluginV3OneBuild,
                  public nvinfer1::IPluginV3OneRuntime
{
public:
    explicit SgsPlugin(SgsFields const& fields);
    SgsPlugin(SgsPlugin const& other);
    SgsPlugin& operator=(SgsPlugin const&) = delete;
    ~SgsPlugin() override = default;

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

    // IPluginV3OneBuild
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t getNbOutputs() const noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
        int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

    SgsFields const& fields() const noexcept
    {
        return mFields;
    }

private:
    SgsFields mFields;
    std::vector<nvinfer1::PluginField> mSerialFields;
    nvinfer1::PluginFieldCollection mSerialFc{};
};

class SgsPluginCreator : public nvinfer1::IPluginCreatorV3One
{
public:
    SgsPluginCreator();
    ~SgsPluginCreator() override = default;

    nvinfer1::IPluginV3* createPlugin(
        char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

private:
    std::vector<nvinfer1::PluginField> mFieldNames;
    nvinfer1::PluginFieldCollection mFc{};
};

} // namespace sgs
} // namespace atfr

#endif // ATFR_SGS_PLUGIN_H
