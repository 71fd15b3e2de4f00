// How TensorRT finds the plugins, in both ways its users load a plugin library:
// - `trtexec --dynamicPlugins` and IPluginRegistry::loadLibrary call getCreators (and
//   setLoggerFinder) themselves;
// - polygraphy `--plugins`, `trtexec --staticPlugins` and Python users only dlopen the
//   library, so it registers its creators on load into the libnvinfer already in the process.
// The library does not link libnvinfer: it looks for a loaded one by soname (a library loaded
// RTLD_LOCAL, as TensorRT's Python wheels do, is invisible to dlsym(RTLD_DEFAULT), but
// dlopen(RTLD_NOLOAD) by soname finds it; docs/tensorrt-plugin-research.md section 3).
#include <dlfcn.h>

#include <string>

#include "plugin_base.h"
#include "plugins.h"

// TENSORRTAPI exports only when building TensorRT itself: the entry points need their own.
#define AMX_TRT_API __attribute__((visibility("default")))

namespace {

using namespace nvinfer1;

IPluginCreatorInterface* const* creators(int32_t* count) {
  static IPluginCreatorInterface* const all[] = {amx::trt::matmul_creator(),
                                                 amx::trt::quantize_creator()};
  *count = int32_t(sizeof all / sizeof all[0]);
  return all;
}

// libnvinfer of TensorRT 10 (and 11, which keeps the plugin registry API), if loaded.
void* loaded_nvinfer() {
  for (const char* soname : {"libnvinfer.so.10", "libnvinfer.so.11"}) {
    if (void* handle = dlopen(soname, RTLD_LAZY | RTLD_NOLOAD)) return handle;
  }
  return nullptr;
}

__attribute__((constructor)) void register_with_loaded_tensorrt() {
  void* nvinfer = loaded_nvinfer();
  if (nvinfer == nullptr) return;  // not in a TensorRT process (yet): getCreators serves later
  using GetRegistry = IPluginRegistry* (*)();
  auto get_registry = reinterpret_cast<GetRegistry>(dlsym(nvinfer, "getPluginRegistry"));
  IPluginRegistry* registry = get_registry != nullptr ? get_registry() : nullptr;
  if (registry != nullptr) {
    int32_t count = 0;
    IPluginCreatorInterface* const* all = creators(&count);
    for (int32_t i = 0; i < count; ++i) {
      // false when already registered (e.g. loadLibrary after a dlopen): not an error
      if (!registry->registerCreator(*all[i], amx::trt::kNamespace))
        amx::trt::log(ILogger::Severity::kVERBOSE, "a creator was registered already");
    }
  }
  dlclose(nvinfer);  // drops the reference NOLOAD took; libnvinfer stays loaded
}

}  // namespace

extern "C" AMX_TRT_API IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) {
  return creators(&nbCreators);
}

extern "C" AMX_TRT_API void setLoggerFinder(ILoggerFinder* finder) {
  amx::trt::set_logger_finder(finder);
}
