/*
 * ATFR SGS plugin, static registration variant (libatfr_sgs.so).
 *
 * Loading the library (dlopen) runs the static registrar below, which registers the SGS creator with
 * TensorRT's global plugin registry under the namespace "atfr" (kSGS_PLUGIN_NAMESPACE), the one the
 * creator reports and the ONNX node asks for (plugin_namespace). REGISTER_TENSORRT_PLUGIN is not
 * used: its PluginRegistrar calls registerCreator(creator, "") (NvInferRuntime.h of 10.3 to 11.1),
 * which files the creator under the empty namespace, where the ONNX parser's lookup of
 * ("SGS", "1", "atfr") and the runtime's get_creator("SGS", "1", "atfr") would not find it.
 * NVIDIA's own libraries register with the library namespace the same way (initLibNvInferPlugins).
 * Use with: Python ctypes.CDLL(path), polygraphy --plugins path, trtexec --staticPlugins=path,
 * Triton (LD_PRELOAD or the backend's plugins option).
 *
 * Do NOT load this library and libatfr_sgs_vc.so into the same process: the second registration
 * of "atfr::SGS" version "1" fails (IPluginRegistry::loadLibrary refuses already registered plugins).
 */
#include "sgsPlugin.h"

#include <string>

namespace
{
struct SgsStaticRegistrar
{
    SgsStaticRegistrar()
    {
        // The registry keeps a pointer to the creator: it lives for the rest of the process.
        static atfr::sgs::SgsPluginCreator sCreator;
        nvinfer1::IPluginRegistry* registry = getPluginRegistry();
        if (registry == nullptr || !registry->registerCreator(sCreator, atfr::sgs::kSGS_PLUGIN_NAMESPACE))
        {
            atfr::sgs::sgsLogError((std::string("could not register ") + atfr::sgs::kSGS_PLUGIN_NAMESPACE
                + "::" + atfr::sgs::kSGS_PLUGIN_NAME + " version " + atfr::sgs::kSGS_PLUGIN_VERSION
                + " (already registered? load only one of libatfr_sgs.so and libatfr_sgs_vc.so)")
                                       .c_str());
        }
    }
};

SgsStaticRegistrar const gSgsStaticRegistrar{};
} // namespace
