// amx.MatMul as a TensorRT plugin: Y = fake_quant(X) @ dequant(W)^T (+ bias), by
// amx_cuda_matmul. Inputs are the TensorRT form of the node (graph_passes/contract.py):
// X float32/float16/bfloat16 [..., K]; Wcodes int32 [N, nb*B/8] and Wscales int32
// [ceil(N*nb*S/4)], the uint8 codes and scales viewed 4 bytes at a time (TensorRT takes no
// uint8 plugin inputs or constants, plugins/tensorrt/README.md); optional bias [N] of X's type.
#include <string>

#include "amx/format.h"
#include "amx_cuda.h"
#include "plugin_base.h"
#include "plugins.h"

namespace amx::trt {

namespace {

struct MatMulConfig {
  std::string weight_format, act_format;
  int32_t in_features = 0;
  float weight_tensor_scale = 1.0f;
  Format wf{};

  int64_t blocks() const { return (int64_t(in_features) + wf.block - 1) / wf.block; }
  int64_t code_words() const { return blocks() * wf.block / 8; }  // int32s per weight row
  int64_t scale_words(int64_t n) const {
    return (n * blocks() * wf.scales_per_block + 3) / 4;
  }
};

class MatMulPlugin : public PluginBase {
 public:
  static constexpr const char* kName = "MatMul";

  static void describe_fields(FieldList& fields) {
    fields.add_name("weight_format", PluginFieldType::kCHAR);
    fields.add_name("act_format", PluginFieldType::kCHAR);
    fields.add_name("in_features", PluginFieldType::kINT32);
    fields.add_name("weight_tensor_scale", PluginFieldType::kFLOAT32);
  }

  static MatMulPlugin* create(const std::string& node, const PluginFieldCollection* fc) {
    FieldReader read(std::string("MatMul ") + node, fc);
    MatMulConfig c;
    c.weight_format = read.string("weight_format");
    c.act_format = read.string("act_format");
    c.in_features = read.int32("in_features");
    c.weight_tensor_scale = read.float32("weight_tensor_scale", 1.0f);
    Format af;
    if (read.ok() && !format_by_name(c.weight_format.c_str(), &c.wf))
      read.fail("weight_format \"" + c.weight_format + "\" is not a known format");
    if (read.ok() && c.act_format != "none" && !format_by_name(c.act_format.c_str(), &af))
      read.fail("act_format \"" + c.act_format + "\" is not a known format or \"none\"");
    if (read.ok() && c.in_features <= 0) read.fail("in_features must be positive");
    if (read.ok() && c.wf.tensor_scale && !read.has("weight_tensor_scale"))
      read.fail("weight_tensor_scale is required for " + c.weight_format);
    return read.ok() ? new MatMulPlugin(c) : nullptr;
  }

  explicit MatMulPlugin(MatMulConfig config) : c_(std::move(config)) {}

  AsciiChar const* getPluginName() const noexcept override { return kName; }
  IPluginV3* clone() noexcept override { return new (std::nothrow) MatMulPlugin(c_); }

  int32_t getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const*, int32_t,
                          DimsExprs* outputs, int32_t nbOutputs, IExprBuilder&) noexcept override {
    if (!input_count_ok(nbInputs) || nbOutputs != 1) return 1;
    const DimsExprs& x = inputs[0];
    const DimsExprs& codes = inputs[1];
    if (x.nbDims < 1 || codes.nbDims != 2 || inputs[2].nbDims != 1)
      return fail("X needs at least one axis, Wcodes two and Wscales one");
    if (x.d[x.nbDims - 1]->isConstant() && x.d[x.nbDims - 1]->getConstantValue() != c_.in_features)
      return fail(k_mismatch(x.d[x.nbDims - 1]->getConstantValue()));
    if (codes.d[1]->isConstant() && codes.d[1]->getConstantValue() != c_.code_words())
      return fail(codes_mismatch(codes.d[1]->getConstantValue()));
    outputs[0] = x;
    outputs[0].d[x.nbDims - 1] = codes.d[0];  // N
    return 0;
  }

  bool supportsFormatCombination(int32_t pos, DynamicPluginTensorDesc const* inOut,
                                 int32_t nbInputs, int32_t nbOutputs) noexcept override {
    if (!(nbInputs == 3 || nbInputs == 4) || nbOutputs != 1 || pos < 0 ||
        pos >= nbInputs + nbOutputs)
      return false;
    const PluginTensorDesc& d = inOut[pos].desc;
    if (d.format != TensorFormat::kLINEAR) return false;
    if (pos == 0) return is_float_type(d.type);
    if (pos == 1 || pos == 2) return d.type == DataType::kINT32;
    return d.type == inOut[0].desc.type;  // bias and Y: X's type
  }

  int32_t configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs,
                          DynamicPluginTensorDesc const*, int32_t nbOutputs) noexcept override {
    if (!input_count_ok(nbInputs) || nbOutputs != 1) return 1;
    has_bias_ = nbInputs == 4;
    return check_dims(in[0].desc.dims, in[1].desc.dims, in[2].desc.dims);
  }

  int32_t onShapeChange(PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const*,
                        int32_t nbOutputs) noexcept override {
    if (!input_count_ok(nbInputs) || nbOutputs != 1) return 1;
    has_bias_ = nbInputs == 4;
    return check_dims(in[0].dims, in[1].dims, in[2].dims);
  }

  size_t getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
                          DynamicPluginTensorDesc const*, int32_t) const noexcept override {
    if (nbInputs < 1) return 0;
    const Dims& most = inputs[0].max;  // the largest X of the optimization profile
    int64_t m = 1;
    for (int32_t i = 0; i + 1 < most.nbDims; ++i) m *= most.d[i];
    return amx_cuda_matmul_workspace(c_.weight_format.c_str(), c_.act_format.c_str(),
                                     amx_dtype(inputs[0].desc.type), m, c_.in_features);
  }

  int32_t enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const*,
                  void const* const* inputs, void* const* outputs, void* workspace,
                  cudaStream_t stream) noexcept override {
    const Dims& x = inputDesc[0].dims;
    int64_t m = 1;
    for (int32_t i = 0; i + 1 < x.nbDims; ++i) m *= x.d[i];
    const int dtype = amx_dtype(inputDesc[0].type);
    const int rc = amx_cuda_matmul(
        c_.weight_format.c_str(), c_.act_format.c_str(), dtype, inputs[0], m, c_.in_features,
        static_cast<const uint8_t*>(inputs[1]), static_cast<const uint8_t*>(inputs[2]),
        c_.weight_tensor_scale, inputDesc[1].dims.d[0], has_bias_ ? inputs[3] : nullptr, dtype,
        outputs[0], workspace, stream);
    return rc == AMX_OK ? 0 : fail("enqueue: " + kernel_error(rc));
  }

  PluginFieldCollection const* getFieldsToSerialize() noexcept override {
    serialized_ = std::make_unique<FieldList>();
    serialized_->add_string("weight_format", c_.weight_format);
    serialized_->add_string("act_format", c_.act_format);
    serialized_->add_int32("in_features", c_.in_features);
    serialized_->add_float32("weight_tensor_scale", c_.weight_tensor_scale);
    return serialized_->collection();
  }

 private:
  int32_t fail(const std::string& message) const {
    log_error(std::string("MatMul (") + c_.weight_format + ", K=" +
              std::to_string(c_.in_features) + "): " + message);
    return 1;
  }
  bool input_count_ok(int32_t nbInputs) const {
    if (nbInputs == 3 || nbInputs == 4) return true;
    fail("expects 3 or 4 inputs (X, Wcodes, Wscales[, bias]), got " + std::to_string(nbInputs));
    return false;
  }
  std::string k_mismatch(int64_t k) const {
    return "X's last dimension is " + std::to_string(k) + ", in_features is " +
           std::to_string(c_.in_features);
  }
  std::string codes_mismatch(int64_t words) const {
    return "Wcodes has " + std::to_string(words) + " int32 per row, in_features=" +
           std::to_string(c_.in_features) + " in " + c_.weight_format + " needs " +
           std::to_string(c_.code_words());
  }
  // Dimensions known at this point (-1: not yet) against the fields.
  int32_t check_dims(const Dims& x, const Dims& codes, const Dims& scales) const {
    if (x.nbDims < 1 || codes.nbDims != 2 || scales.nbDims != 1)
      return fail("X needs at least one axis, Wcodes two and Wscales one");
    const int64_t k = x.d[x.nbDims - 1];
    if (k >= 0 && k != c_.in_features) return fail(k_mismatch(k));
    if (codes.d[1] >= 0 && codes.d[1] != c_.code_words()) return fail(codes_mismatch(codes.d[1]));
    const int64_t n = codes.d[0];
    if (n >= 0 && scales.d[0] >= 0 && scales.d[0] != c_.scale_words(n))
      return fail("Wscales has " + std::to_string(scales.d[0]) + " int32, N=" + std::to_string(n) +
                  " rows need " + std::to_string(c_.scale_words(n)));
    return 0;
  }

  MatMulConfig c_;
  bool has_bias_ = false;
  std::unique_ptr<FieldList> serialized_;
};

}  // namespace

IPluginCreatorInterface* matmul_creator() {
  static Creator<MatMulPlugin> creator;
  return &creator;
}

}  // namespace amx::trt
