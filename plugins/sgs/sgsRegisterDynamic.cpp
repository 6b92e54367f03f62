/*
 * ATFR SGS plugin, dynamic ("vc") registration variant (libatfr_sgs_vc.so).
 *
 * No static registrar. TensorRT looks up the exported C entry points when the library is loaded
 * through IPluginRegistry::loadLibrary (Python: registry.load_library), trtexec --dynamicPlugins,
 * or when it is serialized into a plan with IBuilderConfig::setPluginsToSerialize /
 * trtexec --setPluginsToSerialize (version-compatible and lean-runtime engines):
 *   getCreators        (TensorRT >= 10.0; the only creator list that may hold V3 creators)
 *   setLoggerFinder    (gives the plugin the calling engine's logger)
 * exports.map keeps every other symbol local. The registry files the creator under the namespace
 * it reports, "atfr" (sgsPluginId.h).
 *
 * getPluginCreators is deliberately NOT exported: in TensorRT 10.0 it is typed
 * `IPluginCreator* const* getPluginCreators(int32_t&)` and lists V1 creators only
 * (plugin/common/vfcCommon.cpp of release/10.0). SGS has no V1 creator, and returning the V3 creator
 * there would hand TensorRT an object of the wrong class. 10.1+ dropped the symbol.
 */
#include "sgsPlugin.h"

using namespace nvinfer1;

extern "C" TENSORRTAPI IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    static atfr::sgs::SgsPluginCreator sCreator;
    static IPluginCreatorInterface* const sList[] = {&sCreator};
    nbCreators = 1;
    return sList;
}

extern "C" TENSORRTAPI void setLoggerFinder(ILoggerFinder* finder)
{
    atfr::sgs::setSgsLoggerFinder(finder);
}
