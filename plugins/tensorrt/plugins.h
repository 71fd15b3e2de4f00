// The creators of the library's plugins (one function per plugin file).
#pragma once

#include <NvInferRuntime.h>

namespace amx::trt {

nvinfer1::IPluginCreatorInterface* matmul_creator();
nvinfer1::IPluginCreatorInterface* quantize_creator();

}  // namespace amx::trt
