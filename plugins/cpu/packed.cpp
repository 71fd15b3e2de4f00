// Prepacked weights (internal.h's PackedLayout) and the C ABI that uses them: pack once, then
// amx_cpu_matmul_packed on every call. onnxruntime's op packs each node's weights on its
// first run. W4A4 with 32-element blocks takes the packed kernel of the CPU's tier (AVX-512
// VNNI, AVX-VNNI or AVX2: faster than the float panel path at every m measured); everything
// else falls back to amx_cpu_matmul on the original codes and scales.
#include <algorithm>
#include <cstring>
#include <memory>
#include <string>

#include "amx_cpu.h"
#include "internal.h"

namespace amx::cpu {

namespace {

// Whether `code << shift` is the scale exactly (see PackedLayout) for every code of the format.
bool shift_decodable(uint8_t code, ScaleFormat f) {
  switch (f) {
    case ScaleFormat::E5M2:
      return true;  // E5M2 is float16's top byte, NaN included
    case ScaleFormat::E4M3:
      return code < 0x7F;  // non-negative, not NaN
    case ScaleFormat::E8M0:
      return code != 0 && code != 0xFF;  // 2^-127 is a float32 subnormal; 0xFF is NaN
  }
  return false;
}

}  // namespace

bool pack_weights(const uint8_t* codes, const uint8_t* scales, const Format& f, int64_t n,
                  int64_t k, int lanes, PackedLayout* out) {
  const int64_t nb = blocks_of(k, f), row_bytes = code_bytes(k, f);
  const int64_t scale_count = n * nb * f.scales_per_block;
  for (int64_t i = 0; i < scale_count; ++i)
    if (!shift_decodable(scales[i], f.scale_format)) return false;
  out->n = n;
  out->k = k;
  out->blocks = nb;
  out->lanes = lanes;
  out->groups = (n + lanes - 1) / lanes;
  const int64_t block_bytes = 16 * lanes, load_bytes = 4 * lanes;
  out->codes.assign(size_t(out->groups * nb * block_bytes), 0);
  // rows past n: scale code 0, which the shift makes 0.0 in every format, and codes of 0;
  // 16 bytes of slack: the 256-bit kernels read a block's 8 scale codes as 16 bytes
  out->scale_pos.assign(size_t(out->groups * nb * lanes + 16), 0);
  out->scale_neg.assign(size_t(out->groups * nb * lanes + 16), 0);
  out->scale_format = f.scale_format;
  out->unit = f.scale_format == ScaleFormat::E4M3 ? 64.0f : 0.25f;
  auto code_of = [&](int64_t row, int64_t e) {
    return uint8_t((codes[row * row_bytes + (e >> 1)] >> ((e & 1) * 4)) & 0xF);
  };
  // whole groups per task: a group's rows share its vectors
  parallel_ranges(out->groups, grain_for(out->groups, lanes * k), [&](int64_t g0, int64_t g1) {
    for (int64_t row = g0 * lanes; row < std::min(n, g1 * lanes); ++row) {
      const int64_t grp = row / lanes, lane = row % lanes;
      for (int64_t b = 0; b < nb; ++b) {
        uint8_t* dst = out->codes.data() + (grp * nb + b) * block_bytes;
        for (int l = 0; l < 4; ++l)
          for (int p = 0; p < 4; ++p) {
            const int64_t e = b * 32 + 8 * l + p;
            dst[l * load_bytes + lane * 4 + p] =
                uint8_t(code_of(row, e) | (code_of(row, e + 4) << 4));
          }
        const uint8_t* s = scales + (row * nb + b) * f.scales_per_block;
        const size_t at = size_t((grp * nb + b) * lanes + lane);
        out->scale_pos[at] = s[0];
        out->scale_neg[at] = s[f.scales_per_block - 1];
      }
    }
  });
  return true;
}

void size_folded(ActivationPlanes* x) {
  x->folded.values.assign(size_t(x->rows * x->blocks * 32), 0);
  x->folded.scale.assign(size_t(x->rows * x->blocks), 0.0f);
}

void split_list(ActivationPlanes* x) {
  x->split.clear();
  for (int64_t b = 0; b < x->blocks; ++b)
    if (x->folded.scale[size_t(b)] == 0.0f) x->split.push_back(b);
  x->split.push_back(x->blocks);
}

void list_operands(ActivationPlanes* x, uint8_t offset, const int* shift) {
  ActivationPlanes::Operands& o = x->operands;
  const int64_t rows = x->rows, nb = x->blocks;
  o.list.clear();
  o.first.assign(size_t(rows * nb + 1), 0);
  // 2^shift and back: both exact where the scale's product is (no underflow, no overflow)
  const float up = shift ? exp2i(*shift) : 1.0f, down = shift ? exp2i(-*shift) : 1.0f;
  o.shifted = shift != nullptr;
  auto add = [&](const void* values, float scale, int64_t r) {
    ActivationPlanes::Operand op;
    std::memcpy(op.values, values, sizeof op.values);
    for (uint8_t& v : op.values) v ^= offset;
    op.scale = scale;
    op.acc_offset = r * 32;
    op.scale_shifted = scale * up;
    // NaN stays NaN either way; a finite scale must come back (Inf: Inf)
    if (scale == scale && op.scale_shifted * down != scale) o.shifted = false;
    o.list.push_back(op);
  };
  for (int64_t b = 0; b < nb; ++b)
    for (int64_t r = 0; r < rows; ++r) {
      o.first[size_t(b * rows + r)] = int64_t(o.list.size());
      const size_t at = size_t(r * nb + b);
      const float folded = x->folded.scale[at];
      if (folded != 0.0f) {
        add(&x->folded.values[at * 32], folded, r);
      } else {
        add(&x->pos[at * 32], x->scale_pos[at], r);
        add(&x->neg[at * 32], -x->scale_neg[at], r);
      }
    }
  o.first[size_t(rows * nb)] = int64_t(o.list.size());
}

namespace {

// The packed kernel of a tier: its layout's lanes, its fold and its range function.
struct PackedKernel {
  int lanes;
  void (*fold)(ActivationPlanes*, int64_t);
  void (*gemv)(const PackedLayout&, const ActivationPlanes&, const float*, float*, int64_t,
               int64_t, int64_t, int64_t);
};

// The kernel of `isa`, or false for the portable tier (no packed kernel).
bool packed_kernel(Isa isa, PackedKernel* out) {
  switch (isa) {
    case Isa::Avx512Vnni:
      *out = {16, fold_activation_block_avx512, packed_gemv_avx512};
      return true;
    case Isa::AvxVnni:
      *out = {8, fold_activation_block_avx2, packed_gemv_avx_vnni};
      return true;
    case Isa::Avx2:
      *out = {8, fold_activation_block_avx2, packed_gemv_avx2};
      return true;
    case Isa::Portable:
      break;
  }
  return false;
}

}  // namespace

}  // namespace amx::cpu

using namespace amx;
using namespace amx::cpu;

struct amx_packed_weights {
  std::string weight_format;
  Format format{};
  const uint8_t* codes = nullptr;  // the caller's, kept alive by the caller
  const uint8_t* scales = nullptr;
  float tensor_scale = 1.0f;
  PackedLayout layout;  // empty when the CPU or the format has no packed kernel
};

extern "C" amx_packed_weights* amx_cpu_pack_weights(const char* weight_format,
                                                    const uint8_t* codes, const uint8_t* scales,
                                                    float weight_tensor_scale, int64_t n,
                                                    int64_t k) {
  Format f;
  if (weight_format == nullptr || !format_by_name(weight_format, &f) || n <= 0 || k <= 0 ||
      !codes || !scales)
    return nullptr;
  auto packed = std::make_unique<amx_packed_weights>();
  packed->weight_format = weight_format;
  packed->format = f;
  packed->codes = codes;
  packed->scales = scales;
  packed->tensor_scale = f.tensor_scale ? weight_tensor_scale : 1.0f;
  // 32-element blocks without a tensor scale, whose scale codes all have their shift form
  PackedKernel kernel;
  if (f.block == 32 && !f.tensor_scale && packed_kernel(current_isa(), &kernel) &&
      !pack_weights(codes, scales, f, n, k, kernel.lanes, &packed->layout))
    packed->layout = PackedLayout{};
  else if (current_isa() == Isa::AvxVnni && !packed->layout.codes.empty())
    fold_weight_blocks(&packed->layout);
  else if (current_isa() == Isa::Avx2 && !packed->layout.codes.empty())
    fold_window(&packed->layout);
  packed->layout.isa = current_isa();
  packed->layout.n = n;
  packed->layout.k = k;
  return packed.release();
}

extern "C" void amx_cpu_free_packed(amx_packed_weights* packed) { delete packed; }

namespace {
constexpr int64_t kRowTile = 64;
}  // namespace

extern "C" int amx_cpu_matmul_packed(const amx_packed_weights* w, const char* act_format,
                                     const float* x, int64_t m, const float* bias, float* y) {
  if (w == nullptr || x == nullptr || y == nullptr) return AMX_ERR_ARGUMENT;
  const int64_t n = w->layout.n, k = w->layout.k;
  Format af;
  const bool quantize_x = act_format != nullptr && std::strcmp(act_format, "none") != 0;
  if (quantize_x && !format_by_name(act_format, &af)) return AMX_ERR_FORMAT;
  if (m <= 0) return AMX_ERR_SHAPE;
  // the tier may have changed since packing (amx_cpu_set_isa): then the unpacked path
  PackedKernel kernel;
  const bool packed_path = !w->layout.codes.empty() && quantize_x && af.block == 32 &&
                           w->layout.isa == current_isa() &&
                           packed_kernel(w->layout.isa, &kernel);
  if (!packed_path)
    return amx_cpu_matmul(w->weight_format.c_str(), act_format, x, m, k, w->codes, w->scales,
                          w->tensor_scale, n, bias, y);
  // The activations first (on the calling thread below kParallelElements values: at M = 1
  // that is cheaper than a second round of tasks), then the products.
  ActivationPlanes planes;
  size_planes(m, w->layout.blocks, &planes);
  size_folded(&planes);
  const ScaleTable& table = scale_table(af.scale_format);
  const int64_t units = m * w->layout.blocks, groups = w->layout.groups;
  parallel_ranges(units, grain_for(units, 32), [&](int64_t begin, int64_t end) {
    for (int64_t at = begin; at < end; ++at) {
      quantize_natural_block(x, k, af, table, at, &planes);
      // the kernel takes the weight scales' unit (a power of two: exact) from here
      planes.scale_pos[size_t(at)] *= w->layout.unit;
      planes.scale_neg[size_t(at)] *= w->layout.unit;
      kernel.fold(&planes, at);
    }
  });
  if (m > 1 && kernel.lanes == 8) {
    const bool window = w->layout.fold_span != 0xFF;
    list_operands(&planes, w->layout.isa == Isa::AvxVnni ? uint8_t(0x80) : uint8_t(0),
                  window ? &w->layout.fold_shift : nullptr);
  }
  if (m == 1 && kernel.lanes == 8) split_list(&planes);
  // 64 rows at a time: their planes stay in L2 while every group of weights passes (all of
  // M = 512's planes per group: 67 -> 54 ms at 4096x4096; 16 to 64 rows measured alike).
  // Tasks go tile by tile, each a run of groups for one tile's rows.
  const int64_t tiles = (m + kRowTile - 1) / kRowTile;
  const int64_t grain = grain_for_macs(std::min(m, kRowTile) * kernel.lanes * k);
  const int64_t runs = tasks_for(groups, grain);
  parallel_for(tiles * runs, [&](int64_t t) {
    const int64_t r0 = t / runs * kRowTile, run = t % runs;
    kernel.gemv(w->layout, planes, bias, y, task_begin(run, groups, runs),
                task_begin(run + 1, groups, runs), r0, std::min(m, r0 + kRowTile));
  });
  return AMX_OK;
}
