/*
 * ATFR SGS plugin, dynamic ("vc") registration variant (libatfr_sgs_vc.so).
 *
 * No static registrar. TensorRT looks up the exported C entry points when the library is loaded
 * through IPluginRegistry::loadLibrary (Python: registry.load_library), trtexec --dynamicPlugins,
 * or when it is serialized into a plan with IBuilderConfig::setPluginsToSerialize /
 * trtexec --setPluginsToSerialize (version-compatible and lean-runtime engines):
 *   getCreators        (TensorRT >= 10.2)
 *   getPluginCreators  (deprecated alias, looked up by TensorRT 10.0-10.1)
 *   setLoggerFinder    (gives the plugin the calling engine's logger)
 * exports.map keeps every other symbol local.
 */
#include "sgsPlugin.h"

using namespace nvinfer1;

namespace
{
IPluginCreatorInterface* const* sgsCreatorList(int32_t& nbCreators)
{
    static atfr::sgs::SgsPluginCreator sCreator;
    static IPluginCreatorInterface* const sList[] = {&sCreator};
    nbCreators = 1;
    return sList;
}
} // namespace

extern "C" TENSORRTAPI IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    return sgsCreatorList(nbCreators);
}

extern "C" TENSORRTAPI IPluginCreatorInterface* const* getPluginCreators(int32_t& nbCreators)
{
    return sgsCreatorList(nbCreators);
}

extern "C" TENSORRTAPI void setLoggerFinder(ILoggerFinder* finder)
{
    atfr::sgs::setSgsLoggerFinder(finder);
}
