// The weight side of AVX-VNNI's row tiles (PackedLayout::fold): each 8-row block's two scales
// folded into one per row where every folded value fits in int8, so that the kernel needs one
// VPDPBUSD per 32 products for it, not two; and AVX2's fold window (fold_window), the weight
// blocks whose two sums its row tiles combine in int32. Scalar: it runs once, at pack time.
#include <algorithm>
#include <vector>

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

namespace {

constexpr int kShiftMin = -110, kShiftMax = 110;  // 65537 x 2^-shift a normal float (kernel)
constexpr int kShifts = kShiftMax - kShiftMin + 1;

// The codes [lo, hi] whose scales, divided by 2^shift, are the integers 1 to 255: the run of
// such codes that ends at the largest (codes ascend with their values: positive E5M2, E4M3
// and E8M0 codes); false where none is.
bool code_window(ScaleFormat f, int shift, int* lo, int* hi) {
  const int top = f == ScaleFormat::E5M2 ? 0x7B : f == ScaleFormat::E4M3 ? 0x7E : 0xFE;
  auto ok = [&](int code) {
    const float q = shifted_scale(uint8_t(code), f) * exp2i(-shift);  // exact: a power of two
    return q >= 1.0f && q <= 255.0f && q == float(int(q));
  };
  *hi = top;
  while (*hi > 0 && !ok(*hi)) --*hi;
  if (!ok(*hi)) return false;
  *lo = *hi;
  while (*lo > 0 && ok(*lo - 1)) --*lo;
  return true;
}

}  // namespace

void fold_window(PackedLayout* w) {
  w->fold_span = 0xFF;
  int lo[kShifts], hi[kShifts];
  bool any[kShifts];
  for (int s = 0; s < kShifts; ++s)
    any[s] = code_window(w->scale_format, kShiftMin + s, &lo[s], &hi[s]);
  // the group blocks by their smallest and largest code (all 16), then for each shift the
  // number inside its window
  std::vector<uint32_t> ranges(256 * 256, 0);
  const int64_t blocks = w->groups * w->blocks;
  for (int64_t at = 0; at < blocks; ++at) {
    uint8_t cmin = 0xFF, cmax = 0;
    for (int lane = 0; lane < kFoldLanes; ++lane)
      for (const uint8_t c : {w->scale_pos[size_t(at * kFoldLanes + lane)],
                              w->scale_neg[size_t(at * kFoldLanes + lane)]}) {
        cmin = std::min(c, cmin);
        cmax = std::max(c, cmax);
      }
    ++ranges[size_t(cmin * 256 + cmax)];
  }
  int64_t count[kShifts] = {};
  for (int r = 0; r < 256 * 256; ++r)
    if (ranges[size_t(r)])
      for (int s = 0; s < kShifts; ++s)
        if (any[s] && lo[s] <= r / 256 && r % 256 <= hi[s]) count[s] += ranges[size_t(r)];
  int best = 0;
  for (int s = 1; s < kShifts; ++s) best = count[s] > count[best] ? s : best;
  if (count[best] == 0) return;
  w->fold_shift = kShiftMin + best;
  w->fold_lo = uint8_t(lo[best]);
  w->fold_span = uint8_t(hi[best] - lo[best]);
}

}  // namespace amx::cpu
