/*
 * ATFR SGS plugin identity: the (name, version, namespace) triple TensorRT looks the creator up by.
 *
 * One definition for every place that needs it: SgsPlugin and SgsPluginCreator report it, the static
 * library registers the creator under kSGS_PLUGIN_NAMESPACE (sgsRegisterStatic.cpp), the dynamic
 * library's creator reports it to IPluginRegistry::loadLibrary, and the ONNX exporter
 * (export/sgs_graphs.py: op_type, plugin_version, plugin_namespace) and the runtime's
 * registry.get_creator(...) must use the same strings. tests/test_plugin_sources.py compiles this
 * header on its own and compares it with export/sgs_graphs.py and an exported ONNX node.
 * No TensorRT or CUDA dependency.
 */
#ifndef ATFR_SGS_PLUGIN_ID_H
#define ATFR_SGS_PLUGIN_ID_H

namespace atfr
{
namespace sgs
{

constexpr char const* kSGS_PLUGIN_NAME = "SGS";
constexpr char const* kSGS_PLUGIN_VERSION = "1";
constexpr char const* kSGS_PLUGIN_NAMESPACE = "atfr";

} // namespace sgs
} // namespace atfr

#endif // ATFR_SGS_PLUGIN_ID_H
