/*
 * Registration check for the two SGS plugin libraries, without TensorRT.
 *
 *   sgsRegistryCheck <libatfr_sgs.so> <libatfr_sgs_vc.so>
 *
 * The executable defines getPluginRegistry() itself (link with -rdynamic) and returns a recording
 * IPluginRegistry, so dlopen'ing the static library runs its registrar against this registry instead
 * of libnvinfer's. Checked (exit 1 with a message on the first failure):
 *   - libatfr_sgs.so registers exactly one creator, under the namespace kSGS_PLUGIN_NAMESPACE, and
 *     a lookup by (name, version, namespace), keyed like TensorRT's on the namespace passed to
 *     registerCreator, finds it;
 *   - the creator is a V3 creator reporting the triple of sgsPluginId.h; a plugin it creates
 *     (build phase, from ONNX-like fields) and the plugin re-created from getFieldsToSerialize()
 *     (runtime phase, what engine deserialization does) report the same triple;
 *   - libatfr_sgs_vc.so registers nothing on load, exports getCreators returning that creator,
 *     and does not export getPluginCreators (V1-only in TensorRT 10.0).
 * Compiled and run by scripts/check_plugin_compile.sh against each TensorRT header version.
 */
#include "NvInferRuntime.h"
#include "sgsPluginId.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <string>
#include <vector>

using namespace nvinfer1;
using atfr::sgs::kSGS_PLUGIN_NAME;
using atfr::sgs::kSGS_PLUGIN_NAMESPACE;
using atfr::sgs::kSGS_PLUGIN_VERSION;

#define TRT_AT_LEAST(maj, min) (NV_TENSORRT_MAJOR > (maj) || (NV_TENSORRT_MAJOR == (maj) && NV_TENSORRT_MINOR >= (min)))

namespace
{
struct Registration
{
    IPluginCreatorInterface* creator;
    std::string ns;
};

class RecordingRegistry : public IPluginRegistry
{
public:
    std::vector<Registration> regs;
    std::vector<IPluginCreatorInterface*> list;

#if NV_TENSORRT_MAJOR < 11
    // Legacy V1 overloads (deprecated in 10.x, removed in 11.0). SGS must never use them.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    bool registerCreator(IPluginCreator&, AsciiChar const* const) noexcept override
    {
        std::fprintf(stderr, "FAIL: registerCreator called with a V1 IPluginCreator\n");
        std::exit(1);
    }
    IPluginCreator* const* getPluginCreatorList(int32_t* const n) const noexcept override
    {
        *n = 0;
        return nullptr;
    }
    IPluginCreator* getPluginCreator(AsciiChar const* const, AsciiChar const* const, AsciiChar const* const) noexcept override
    {
        return nullptr;
    }
    bool deregisterCreator(IPluginCreator const&) noexcept override
    {
        return false;
    }
#pragma GCC diagnostic pop
#endif
    void setErrorRecorder(IErrorRecorder* const) noexcept override {}
    IErrorRecorder* getErrorRecorder() const noexcept override
    {
        return nullptr;
    }
    bool isParentSearchEnabled() const override
    {
        return false;
    }
    void setParentSearchEnabled(bool const) override {}
    PluginLibraryHandle loadLibrary(AsciiChar const*) noexcept override
    {
        return nullptr;
    }
    void deregisterLibrary(PluginLibraryHandle) noexcept override {}
    bool registerCreator(IPluginCreatorInterface& creator, AsciiChar const* const pluginNamespace) noexcept override
    {
        regs.push_back({&creator, pluginNamespace ? pluginNamespace : "<null>"});
        list.push_back(&creator);
        return true;
    }
    IPluginCreatorInterface* const* getAllCreators(int32_t* const n) const noexcept override
    {
        *n = static_cast<int32_t>(list.size());
        return list.data();
    }
    //! Keyed like TensorRT's registry: the namespace is the one passed to registerCreator.
    IPluginCreatorInterface* getCreator(AsciiChar const* const name, AsciiChar const* const version,
        AsciiChar const* const ns = "") noexcept override;
    bool deregisterCreator(IPluginCreatorInterface const&) noexcept override
    {
        return false;
    }
    IPluginResource* acquirePluginResource(AsciiChar const*, IPluginResource*) noexcept override
    {
        return nullptr;
    }
    int32_t releasePluginResource(AsciiChar const*) noexcept override
    {
        return 0;
    }
#if TRT_AT_LEAST(10, 10)
    IPluginCreatorInterface* const* getAllCreatorsRecursive(int32_t* const n) noexcept override
    {
        return getAllCreators(n);
    }
#endif
};

RecordingRegistry gRegistry;

void require(bool ok, std::string const& what)
{
    if (!ok)
    {
        std::fprintf(stderr, "FAIL: %s\n", what.c_str());
        std::exit(1);
    }
    std::printf("ok: %s\n", what.c_str());
}

IPluginCreatorV3One* asV3(IPluginCreatorInterface* c)
{
    InterfaceInfo const info = c->getInterfaceInfo();
    require(info.kind != nullptr && std::strcmp(info.kind, "PLUGIN CREATOR_V3ONE") == 0,
        std::string("creator interface kind is PLUGIN CREATOR_V3ONE (got ") + (info.kind ? info.kind : "null") + ")");
    return static_cast<IPluginCreatorV3One*>(c);
}

bool isTriple(char const* name, char const* version, char const* ns)
{
    return name && version && ns && std::strcmp(name, kSGS_PLUGIN_NAME) == 0
        && std::strcmp(version, kSGS_PLUGIN_VERSION) == 0 && std::strcmp(ns, kSGS_PLUGIN_NAMESPACE) == 0;
}

std::string tripleOf(char const* name, char const* version, char const* ns)
{
    return std::string("(") + (name ? name : "null") + ", " + (version ? version : "null") + ", " + (ns ? ns : "null")
        + ")";
}

void checkPluginTriple(IPluginV3* plugin, char const* what)
{
    require(plugin != nullptr, std::string(what) + ": createPlugin returned a plugin");
    auto* core = static_cast<IPluginV3OneCore*>(plugin->getCapabilityInterface(PluginCapabilityType::kCORE));
    require(core != nullptr, std::string(what) + ": plugin has a CORE capability");
    char const* n = core->getPluginName();
    char const* v = core->getPluginVersion();
    char const* s = core->getPluginNamespace();
    require(isTriple(n, v, s), std::string(what) + ": plugin reports " + tripleOf(n, v, s));
}

void checkCreator(IPluginCreatorInterface* iface, char const* lib)
{
    IPluginCreatorV3One* c = asV3(iface);
    char const* n = c->getPluginName();
    char const* v = c->getPluginVersion();
    char const* s = c->getPluginNamespace();
    require(isTriple(n, v, s), std::string(lib) + ": creator reports " + tripleOf(n, v, s));

    // Build phase: the fields the ONNX parser forwards from the node's attributes.
    int32_t numBins = 8, kernel = 0, normalize = 0, dropBins = 1, guardZero = 1;
    PluginField fields[] = {{"num_bins", &numBins, PluginFieldType::kINT32, 1},
        {"kernel", &kernel, PluginFieldType::kINT32, 1}, {"normalize", &normalize, PluginFieldType::kINT32, 1},
        {"drop_bins", &dropBins, PluginFieldType::kINT32, 1}, {"guard_zero", &guardZero, PluginFieldType::kINT32, 1}};
    PluginFieldCollection fc{5, fields};
    IPluginV3* built = c->createPlugin("SGS_0", &fc, TensorRTPhase::kBUILD);
    checkPluginTriple(built, (std::string(lib) + " build-phase plugin").c_str());
    // Runtime phase (engine deserialization): fields from getFieldsToSerialize.
    auto* rt = static_cast<IPluginV3OneRuntime*>(built->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    require(rt != nullptr, std::string(lib) + ": plugin has a RUNTIME capability");
    IPluginV3* restored = c->createPlugin("SGS_0", rt->getFieldsToSerialize(), TensorRTPhase::kRUNTIME);
    checkPluginTriple(restored, (std::string(lib) + " runtime-phase plugin (deserialization)").c_str());
    delete restored;
    delete built;
}
} // namespace

extern "C" TENSORRTAPI IPluginRegistry* getPluginRegistry() noexcept
{
    return &gRegistry;
}

IPluginCreatorInterface* RecordingRegistry::getCreator(
    AsciiChar const* const name, AsciiChar const* const version, AsciiChar const* const ns) noexcept
{
    for (Registration const& r : regs)
    {
        auto* c = static_cast<IPluginCreatorV3One*>(r.creator);
        if (std::strcmp(c->getPluginName(), name) == 0 && std::strcmp(c->getPluginVersion(), version) == 0
            && r.ns == (ns ? ns : ""))
        {
            return r.creator;
        }
    }
    return nullptr;
}

int main(int argc, char** argv)
{
    if (argc != 3)
    {
        std::fprintf(stderr, "usage: %s <libatfr_sgs.so> <libatfr_sgs_vc.so>\n", argv[0]);
        return 2;
    }
    std::printf("TensorRT headers %d.%d, triple %s\n", NV_TENSORRT_MAJOR, NV_TENSORRT_MINOR,
        tripleOf(kSGS_PLUGIN_NAME, kSGS_PLUGIN_VERSION, kSGS_PLUGIN_NAMESPACE).c_str());

    // Static library: the registrar runs on dlopen.
    void* st = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    require(st != nullptr, std::string("dlopen ") + argv[1] + (st ? "" : std::string(": ") + dlerror()));
    require(gRegistry.regs.size() == 1,
        "libatfr_sgs.so registered exactly one creator on load (got " + std::to_string(gRegistry.regs.size()) + ")");
    require(gRegistry.regs[0].ns == kSGS_PLUGIN_NAMESPACE,
        "libatfr_sgs.so registered under namespace \"" + gRegistry.regs[0].ns + "\", expected \""
            + kSGS_PLUGIN_NAMESPACE + "\"");
    require(gRegistry.getCreator(kSGS_PLUGIN_NAME, kSGS_PLUGIN_VERSION, kSGS_PLUGIN_NAMESPACE) != nullptr,
        "registry lookup of " + tripleOf(kSGS_PLUGIN_NAME, kSGS_PLUGIN_VERSION, kSGS_PLUGIN_NAMESPACE)
            + " (what the ONNX parser and get_creator ask for) finds the creator");
    checkCreator(gRegistry.regs[0].creator, "libatfr_sgs.so");

    // Dynamic library: nothing registered on load; TensorRT calls getCreators.
    void* vc = dlopen(argv[2], RTLD_NOW | RTLD_LOCAL);
    require(vc != nullptr, std::string("dlopen ") + argv[2] + (vc ? "" : std::string(": ") + dlerror()));
    require(gRegistry.regs.size() == 1, "libatfr_sgs_vc.so registers nothing by itself on load");
    using GetCreators = IPluginCreatorInterface* const* (*) (int32_t&);
    auto getCreators = reinterpret_cast<GetCreators>(dlsym(vc, "getCreators"));
    require(getCreators != nullptr, "libatfr_sgs_vc.so exports getCreators");
    require(dlsym(vc, "getPluginCreators") == nullptr,
        "libatfr_sgs_vc.so does not export getPluginCreators (V1-only IPluginCreator list in TensorRT 10.0)");
    require(dlsym(vc, "setLoggerFinder") != nullptr, "libatfr_sgs_vc.so exports setLoggerFinder");
    int32_t nb = -1;
    IPluginCreatorInterface* const* creators = getCreators(nb);
    require(nb == 1 && creators != nullptr && creators[0] != nullptr, "getCreators lists one creator");
    checkCreator(creators[0], "libatfr_sgs_vc.so");
    std::printf("OK registration\n");
    return 0;
}
