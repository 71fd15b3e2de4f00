// The scalar half of folding an activation block's two scales into one (ActivationPlanes::
// Folded), shared by the AVX-512 and AVX2 kernels, which do the 32 products in their own
// vectors. Internal linkage: each ISA-specific file compiles its own copy with its own flags.
#pragma once

#include <cstdint>

#include "internal.h"

namespace amx::cpu {
namespace {

// s = m * 2^e with m odd, for a finite s > 0 (float32 subnormals included).
inline void odd_mantissa(float s, int32_t* m, int* e) {
  const uint32_t bits = float_bits(s);
  const int field = int((bits >> 23) & 0xFF);
  uint32_t mantissa = bits & 0x7FFFFFu;
  int exponent = -149;
  if (field != 0) {
    mantissa |= 0x800000u;
    exponent = field - 150;
  }
  const int zeros = __builtin_ctz(mantissa);
  *m = int32_t(mantissa >> zeros);
  *e = exponent + zeros;
}

// The integers each side's doubled magnitudes are multiplied by (0 for a side with no element,
// 128 where every nonzero element of that side would fail the int8 check), and 2^Emin.
struct FoldFactors {
  int16_t pos, neg;
  float scale;
};

// has_pos / has_neg: whether the block has an element of that sign (a side with none keeps a
// placeholder scale, which must not set Emin). False where a scale is NaN or Inf.
inline bool fold_factors(bool has_pos, bool has_neg, float scale_pos, float scale_neg,
                         FoldFactors* out) {
  if (!is_finite(scale_pos) || !is_finite(scale_neg)) return false;
  int32_t mp = 0, mn = 0;
  int ep = 0, en = 0;
  if (has_pos) odd_mantissa(scale_pos, &mp, &ep);
  if (has_neg) odd_mantissa(scale_neg, &mn, &en);
  const int emin = has_pos && has_neg ? (ep < en ? ep : en) : has_pos ? ep : en;
  // M * 2^(E - Emin), capped at 128: past 127 every nonzero element fails the check
  auto factor = [emin](bool has, int32_t m, int e) -> int16_t {
    if (!has) return 0;
    if (e - emin >= 7 || (m << (e - emin)) > 128) return 128;
    return int16_t(m << (e - emin));
  };
  out->pos = factor(has_pos, mp, ep);
  out->neg = factor(has_neg, mn, en);
  out->scale = exp2i(emin);
  return true;
}

}  // namespace
}  // namespace amx::cpu
