// A stand-in for libnvinfer.so.10 that only has a plugin registry, for the harness's
// self_registration check. Built with -Wl,-soname,libnvinfer.so.10 and loaded RTLD_GLOBAL
// before libamx_trt.so, it is what dlopen("libnvinfer.so.10", RTLD_NOLOAD) finds.
// It records registerCreator/deregisterCreator calls; fake_registered() reports them.
#include <NvInferRuntime.h>

#include <cstring>
#include <string>
#include <vector>

using namespace nvinfer1;

// IPluginRegistry declares the deprecated IPluginCreator overloads pure virtual: they must be
// overridden, which names the deprecated type.
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

namespace {

struct Registration {
    std::string name, version, ns;
    void const* creator;
    bool v3;  // through the IPluginCreatorInterface& overload (the deprecated one otherwise)
};

class FakeRegistry : public IPluginRegistry {
public:
    bool registerCreator(IPluginCreator& creator, AsciiChar const* const ns) noexcept override {
        registered.push_back(
            {creator.getPluginName(), creator.getPluginVersion(), ns ? ns : "(null)", &creator, false});
        return true;
    }
    bool registerCreator(IPluginCreatorInterface& creator, AsciiChar const* const ns) noexcept override {
        Registration r{"?", "?", ns ? ns : "(null)", &creator, true};
        if (std::strcmp(creator.getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") == 0) {
            auto& v3 = static_cast<IPluginCreatorV3One&>(creator);
            r.name = v3.getPluginName();
            r.version = v3.getPluginVersion();
        }
        registered.push_back(r);
        return true;
    }
    bool deregisterCreator(IPluginCreator const&) noexcept override { return ++deregistered, true; }
    bool deregisterCreator(IPluginCreatorInterface const&) noexcept override { return ++deregistered, true; }

    // The rest is never needed by a plugin library registering itself: empty answers.
    IPluginCreator* const* getPluginCreatorList(int32_t* const n) const noexcept override { return none(n); }
    IPluginCreator* getPluginCreator(AsciiChar const* const, AsciiChar const* const,
                                     AsciiChar const* const) noexcept override {
        return nullptr;
    }
    void setErrorRecorder(IErrorRecorder* const) noexcept override {}
    IErrorRecorder* getErrorRecorder() const noexcept override { return nullptr; }
    bool isParentSearchEnabled() const override { return false; }
    void setParentSearchEnabled(bool const) override {}
    PluginLibraryHandle loadLibrary(AsciiChar const*) noexcept override { return nullptr; }
    void deregisterLibrary(PluginLibraryHandle) noexcept override {}
    IPluginCreatorInterface* const* getAllCreators(int32_t* const n) const noexcept override {
        return none(n);
    }
    IPluginCreatorInterface* getCreator(AsciiChar const* const, AsciiChar const* const,
                                        AsciiChar const* const) noexcept override {
        return nullptr;
    }
    IPluginResource* acquirePluginResource(AsciiChar const*, IPluginResource*) noexcept override {
        return nullptr;
    }
    int32_t releasePluginResource(AsciiChar const*) noexcept override { return -1; }
    IPluginCreatorInterface* const* getAllCreatorsRecursive(int32_t* const n) noexcept override {
        return none(n);
    }

    std::vector<Registration> registered;
    int32_t deregistered = 0;

private:
    static std::nullptr_t none(int32_t* const n) {
        if (n != nullptr) *n = 0;
        return nullptr;
    }
};

FakeRegistry gRegistry;

}  // namespace

extern "C" IPluginRegistry* getPluginRegistry() noexcept { return &gRegistry; }

// With i < 0: the number of registerCreator calls. Otherwise fills in call i.
extern "C" __attribute__((visibility("default"))) int32_t fake_registered(int32_t i, char const** name,
                                                                          char const** version,
                                                                          char const** ns,
                                                                          void const** creator, int32_t* v3) {
    auto const& all = gRegistry.registered;
    if (i >= 0 && static_cast<size_t>(i) < all.size()) {
        *name = all[i].name.c_str();
        *version = all[i].version.c_str();
        *ns = all[i].ns.c_str();
        *creator = all[i].creator;
        *v3 = all[i].v3;
    }
    return static_cast<int32_t>(all.size());
}

extern "C" __attribute__((visibility("default"))) int32_t fake_deregistered() {
    return gRegistry.deregistered;
}
