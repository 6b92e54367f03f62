/*
 * ATFR SGS plugin, static registration variant (libatfr_sgs.so).
 *
 * Loading the library (dlopen) runs the static PluginRegistrar below, which registers the SGS
 * creator with TensorRT's global plugin registry. Use with: Python ctypes.CDLL(path), polygraphy
 * --plugins path, trtexec --staticPlugins=path, Triton (LD_PRELOAD or the model config).
 *
 * Do NOT load this library and libatfr_sgs_vc.so into the same process: the second registration
 * of "atfr::SGS" version "1" fails (IPluginRegistry::loadLibrary refuses already registered plugins).
 */
#include "sgsPlugin.h"

using atfr::sgs::SgsPluginCreator;

REGISTER_TENSORRT_PLUGIN(SgsPluginCreator);
