// amx.Quantize as a TensorRT plugin: Y = fake_quant(X, format) along the last axis, in X's
// type and shape, by amx_cuda_fake_quant.
#include <string>

#include "amx/format.h"
#include "amx_cuda.h"
#include "plugin_base.h"
#include "plugins.h"

namespace amx::trt {

namespace {

class QuantizePlugin : public PluginBase {
 public:
  static constexpr const char* kName = "Quantize";

  static void describe_fields(FieldList& fields) {
    fields.add_name("format", PluginFieldType::kCHAR);
  }

  static QuantizePlugin* create(const std::string& node, const PluginFieldCollection* fc) {
    FieldReader read(std::string("Quantize ") + node, fc);
    const std::string format = read.string("format");
    Format f;
    if (read.ok() && !format_by_name(format.c_str(), &f))
      read.fail("format \"" + format + "\" is not a known format");
    return read.ok() ? new QuantizePlugin(format) : nullptr;
  }

  explicit QuantizePlugin(std::string format) : format_(std::move(format)) {}

  AsciiChar const* getPluginName() const noexcept override { return kName; }
  IPluginV3* clone() noexcept override { return new (std::nothrow) QuantizePlugin(format_); }

  int32_t getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const*, int32_t,
                          DimsExprs* outputs, int32_t nbOutputs, IExprBuilder&) noexcept override {
    if (nbInputs != 1 || nbOutputs != 1 || inputs[0].nbDims < 1) {
      log_error("Quantize (" + format_ + "): expects one input X with at least one axis");
      return 1;
    }
    outputs[0] = inputs[0];
    return 0;
  }

  bool supportsFormatCombination(int32_t pos, DynamicPluginTensorDesc const* inOut,
                                 int32_t nbInputs, int32_t nbOutputs) noexcept override {
    if (nbInputs != 1 || nbOutputs != 1 || pos < 0 || pos > 1) return false;
    const PluginTensorDesc& d = inOut[pos].desc;
    if (d.format != TensorFormat::kLINEAR) return false;
    return pos == 0 ? is_float_type(d.type) : d.type == inOut[0].desc.type;
  }

  int32_t configurePlugin(DynamicPluginTensorDesc const*, int32_t nbInputs,
                          DynamicPluginTensorDesc const*, int32_t nbOutputs) noexcept override {
    return nbInputs == 1 && nbOutputs == 1 ? 0 : 1;
  }

  int32_t onShapeChange(PluginTensorDesc const*, int32_t nbInputs, PluginTensorDesc const*,
                        int32_t nbOutputs) noexcept override {
    return nbInputs == 1 && nbOutputs == 1 ? 0 : 1;
  }

  size_t getWorkspaceSize(DynamicPluginTensorDesc const*, int32_t, DynamicPluginTensorDesc const*,
                          int32_t) const noexcept override {
    return amx_cuda_quantize_workspace();
  }

  int32_t enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const*,
                  void const* const* inputs, void* const* outputs, void* workspace,
                  cudaStream_t stream) noexcept override {
    const Dims& x = inputDesc[0].dims;
    int64_t count = 1;
    for (int32_t i = 0; i < x.nbDims; ++i) count *= x.d[i];
    const int64_t k = x.d[x.nbDims - 1];
    if (count == 0) return 0;
    const int rc = amx_cuda_fake_quant(format_.c_str(), amx_dtype(inputDesc[0].type), inputs[0],
                                       count / k, k, outputs[0], workspace, stream);
    if (rc == AMX_OK) return 0;
    log_error("Quantize (" + format_ + "): enqueue: " + kernel_error(rc));
    return 1;
  }

  PluginFieldCollection const* getFieldsToSerialize() noexcept override {
    serialized_ = std::make_unique<FieldList>();
    serialized_->add_string("format", format_);
    return serialized_->collection();
  }

 private:
  std::string format_;
  std::unique_ptr<FieldList> serialized_;
};

}  // namespace

IPluginCreatorInterface* quantize_creator() {
  static Creator<QuantizePlugin> creator;
  return &creator;
}

}  // namespace amx::trt
