// The weight side of AVX-VNNI's row tiles (PackedLayout::fold): each 8-row block's two scales
// folded into one per row where every folded value fits in int8, so that the kernel needs one
// VPDPBUSD per 32 products for it, not two. Scalar: it runs once, at pack time.
#include "fold.h"
#include "internal.h"

namespace amx::cpu {

namespace {

// The largest doubled E2M1 magnitude (0..12) of a code byte's two elements on each side: a
// table per byte, as the per-element loop took 6 ns an element (150 ms for 4096x11008)
struct ByteMaxima {
  uint8_t pos[256], neg[256];
  ByteMaxima() {
    constexpr uint8_t doubled[8] = {0, 1, 2, 3, 4, 6, 8, 12};
    for (int v = 0; v < 256; ++v) {
      pos[v] = neg[v] = 0;
      for (const int code : {v & 0xF, v >> 4}) {
        uint8_t& side = code & 8 ? neg[v] : pos[v];
        side = doubled[code & 7] > side ? doubled[code & 7] : side;
      }
    }
  }
};

// A scale code as the packed kernel's shift makes it a float (PackedLayout: E4M3 x 2^-8).
float shifted_scale(uint8_t code, ScaleFormat f) {
  const float v = scale_table(f).value[code];
  return f == ScaleFormat::E4M3 ? v * exp2i(-8) : v;
}

// Block b of group grp: its 24 fold bytes, or false where it stays two planes.
bool fold_block(const PackedLayout& w, const ByteMaxima& table, int64_t grp, int64_t b,
                uint8_t* out) {
  const int64_t at = grp * w.blocks + b;
  const uint8_t* codes = w.codes.data() + at * 16 * kFoldLanes;
  for (int lane = 0; lane < kFoldLanes; ++lane) {
    int max_pos = 0, max_neg = 0;
    for (int l = 0; l < 4; ++l)
      for (int p = 0; p < 4; ++p) {
        const uint8_t byte = codes[l * 4 * kFoldLanes + lane * 4 + p];
        max_pos = table.pos[byte] > max_pos ? table.pos[byte] : max_pos;
        max_neg = table.neg[byte] > max_neg ? table.neg[byte] : max_neg;
      }
    const size_t s = size_t(at * kFoldLanes + lane);
    const float sp = shifted_scale(w.scale_pos[s], w.scale_format);
    const float sn = shifted_scale(w.scale_neg[s], w.scale_format);
    // a side with elements needs a positive scale (odd_mantissa's domain, and the sign)
    if ((max_pos && !(sp > 0.0f)) || (max_neg && !(sn > 0.0f))) return false;
    FoldFactors f;
    if (!fold_factors(max_pos > 0, max_neg > 0, sp, sn, &f)) return false;
    if (f.pos * max_pos > 127 || f.neg * max_neg > 127) return false;
    // 2^Emin as a normal float's exponent field (1 to 254; 0 marks a block that stays split)
    const int field = int((float_bits(f.scale) >> 23) & 0xFF);
    if (field == 0 || field == 0xFF) return false;
    out[lane] = uint8_t(f.pos);
    out[kFoldLanes + lane] = uint8_t(f.neg);
    out[2 * kFoldLanes + lane] = uint8_t(field);
  }
  return true;
}

}  // namespace

void fold_weight_blocks(PackedLayout* w) {
  static const ByteMaxima table;
  w->fold.assign(size_t(w->groups * w->blocks * kFoldBytes), 0);
  parallel_ranges(w->groups, grain_for(w->groups, kFoldLanes * w->k), [&](int64_t g0, int64_t g1) {
    for (int64_t grp = g0; grp < g1; ++grp)
      for (int64_t b = 0; b < w->blocks; ++b) {
        uint8_t* out = w->fold.data() + (grp * w->blocks + b) * kFoldBytes;
        if (!fold_block(*w, table, grp, b, out)) std::fill(out, out + kFoldBytes, uint8_t(0));
      }
  });
}

}  // namespace amx::cpu
