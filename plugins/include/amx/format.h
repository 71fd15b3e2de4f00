// The numerics of shared/FORMAT.md, once, for C++ host code and CUDA device code.
//
// Everything here is a pure function of float32 inputs and must give the same codes and
// scales as amx_export.formats (the Python source of truth), bit for bit: IEEE float32
// division, exact round-to-nearest with ties away from zero, no fast-math. The tests in
// tests/native/ hold it to the Python implementation on random, adversarial and edge inputs.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define AMX_HD __host__ __device__ __forceinline__
#else
#define AMX_HD inline
#endif

namespace amx {

enum class ScaleFormat : uint8_t { E5M2, E4M3, E8M0 };
enum class ScaleRule : uint8_t { Minifloat, PowerOfTwo };

// One entry of the format registry (amx_export/formats/specs.py).
struct Format {
  int block;             // elements per block along K (32, or 16 for NVFP4)
  int scales_per_block;  // 2: positive scale then negative scale (AMXFP4); 1 otherwise
  ScaleFormat scale_format;
  ScaleRule rule;
  uint8_t zero_scale_code;  // scale code when the block side has no element (scale input 0)
  bool tensor_scale;        // NVFP4: a float32 per-tensor scale g
};

constexpr Format kAmxfp4{32, 2, ScaleFormat::E5M2, ScaleRule::Minifloat, 0x3C, false};
constexpr Format kAmxfp4E4m3{32, 2, ScaleFormat::E4M3, ScaleRule::Minifloat, 0x38, false};
constexpr Format kAmxfp4E8m0{32, 2, ScaleFormat::E8M0, ScaleRule::PowerOfTwo, 127, false};
constexpr Format kMxfp4{32, 1, ScaleFormat::E8M0, ScaleRule::PowerOfTwo, 0, false};
constexpr Format kNvfp4{16, 1, ScaleFormat::E4M3, ScaleRule::Minifloat, 0x00, true};

constexpr float kNvfp4TensorDivisor = 448.0f * 6.0f;  // E4M3FN max times E2M1 max

// Format by its amx_export.formats name; returns false for an unknown name.
inline bool format_by_name(const char* name, Format* out) {
  struct Entry {
    const char* name;
    Format format;
  };
  static const Entry kEntries[] = {{"amxfp4", kAmxfp4},
                                   {"amxfp4-e4m3", kAmxfp4E4m3},
                                   {"amxfp4-e8m0", kAmxfp4E8m0},
                                   {"mxfp4", kMxfp4},
                                   {"nvfp4", kNvfp4}};
  for (const Entry& e : kEntries) {
    if (std::strcmp(e.name, name) == 0) {
      *out = e.format;
      return true;
    }
  }
  return false;
}

AMX_HD uint32_t float_bits(float v) {
  uint32_t b;
  std::memcpy(&b, &v, sizeof b);
  return b;
}

AMX_HD float bits_float(uint32_t b) {
  float v;
  std::memcpy(&v, &b, sizeof v);
  return v;
}

AMX_HD bool is_finite(float v) { return (float_bits(v) & 0x7F800000u) != 0x7F800000u; }

AMX_HD float quiet_nan() { return bits_float(0x7FC00000u); }

// 2^e for e in [-149, 127], exactly.
AMX_HD float exp2i(int e) {
  if (e >= -126) return bits_float(uint32_t(e + 127) << 23);
  return bits_float(1u << (e + 149));  // subnormal
}

// ---- elements: FP4 E2M1 -------------------------------------------------------------------

// |code| -> value: 0, 0.5, 1, 1.5, 2, 3, 4, 6; bit 3 is the sign.
AMX_HD float e2m1_decode(uint8_t code) {
  const uint8_t m = code & 7;
  const float mag =
      m < 4 ? 0.5f * float(m) : float(1 << ((m >> 1) - 1)) * (1.0f + 0.5f * float(m & 1));
  return (code & 8) ? -mag : mag;
}

// Magnitude code of a >= 0 rounded to E2M1: how many midpoints (0.25 0.75 1.25 1.75 2.5 3.5 5)
// are <= a; ties go up (away from zero), values past 5 saturate to 6, NaN gives 0.
AMX_HD uint8_t e2m1_magnitude(float a) {
  return uint8_t((a >= 0.25f) + (a >= 0.75f) + (a >= 1.25f) + (a >= 1.75f) + (a >= 2.5f) +
                 (a >= 3.5f) + (a >= 5.0f));
}

// ---- scales: FP8 E5M2 / E4M3FN and E8M0 -------------------------------------------------------

struct MiniFloat {
  int ebits, mbits;
  uint8_t max_code;  // the largest finite positive code (saturation)
  uint8_t nan_code;  // the positive NaN code
};
constexpr MiniFloat kE5M2{5, 2, 0x7B, 0x7F};
constexpr MiniFloat kE4M3{4, 3, 0x7E, 0x7F};

// By value rather than a reference to kE5M2/kE4M3: namespace-scope constants are host-only.
AMX_HD MiniFloat minifloat_of(ScaleFormat f) {
  return f == ScaleFormat::E5M2 ? MiniFloat{5, 2, 0x7B, 0x7F} : MiniFloat{4, 3, 0x7E, 0x7F};
}

// Positive code of v > 0 (finite) rounded to the minifloat: nearest, ties away, saturating.
AMX_HD uint8_t minifloat_round(float v, MiniFloat f) {
  const int bias = (1 << (f.ebits - 1)) - 1;
  const uint32_t exp_field = (float_bits(v) >> 23) & 0xFF;
  int e = exp_field == 0 ? -127 : int(exp_field) - 127;  // floor(log2 v) for normal v
  if (e < 1 - bias) e = 1 - bias;                         // the format's subnormal range
  const int shift = e - f.mbits;                          // step = 2^shift
  // v / step, exact: a power-of-two scaling that stays in range for every finite v here
  const float q = shift >= 0 ? v / exp2i(shift) : v * exp2i(-shift);
  float n = float(int64_t(q));  // floor (q >= 0); q < 2^(mbits+2) unless v saturates
  if (q - n >= 0.5f) n += 1.0f;
  const int64_t mantissa = int64_t(n) - (int64_t(1) << f.mbits);
  const int64_t code = (int64_t(e + bias) << f.mbits) + mantissa;
  return uint8_t(code > f.max_code ? f.max_code : code);
}

AMX_HD float minifloat_decode(uint8_t code, MiniFloat f) {
  const uint8_t mag = code & 0x7F;
  if (mag > f.max_code) return quiet_nan();  // both layouts: above max is Inf/NaN, never a scale
  const int bias = (1 << (f.ebits - 1)) - 1;
  const int exp_field = mag >> f.mbits, mantissa = mag & ((1 << f.mbits) - 1);
  const float value =
      exp_field == 0 ? float(mantissa) * exp2i(1 - bias - f.mbits)
                     : float((1 << f.mbits) + mantissa) * exp2i(exp_field - bias - f.mbits);
  return (code & 0x80) ? -value : value;
}

// E8M0 code of 2^(floor(log2 m) - 2) for m > 0 (finite), clamped to codes 0..252.
AMX_HD uint8_t pot_code(float m) {
  const int exp_field = int((float_bits(m) >> 23) & 0xFF);
  if (exp_field == 0) return 0;  // m < 2^-126: floor(log2 m) + 125 < 0
  const int code = exp_field - 127 + 125;
  return uint8_t(code < 0 ? 0 : (code > 252 ? 252 : code));
}

AMX_HD float e8m0_decode(uint8_t code) { return code == 0xFF ? quiet_nan() : exp2i(int(code) - 127); }

AMX_HD float scale_decode(uint8_t code, ScaleFormat f) {
  return f == ScaleFormat::E8M0 ? e8m0_decode(code) : minifloat_decode(code, minifloat_of(f));
}

AMX_HD uint8_t scale_nan_code(ScaleFormat f) { return f == ScaleFormat::E8M0 ? 0xFF : 0x7F; }

// Scale code of one block side from its magnitude m >= 0 (pmax, nmax or amax); g is NVFP4's
// tensor scale (1 otherwise, and then not applied).
AMX_HD uint8_t scale_code(float m, const Format& f, float g) {
  float s = f.rule == ScaleRule::Minifloat ? m / 6.0f : m;
  if (f.tensor_scale) s = s / g;
  if (s == 0.0f) return f.zero_scale_code;
  return f.rule == ScaleRule::Minifloat ? minifloat_round(s, minifloat_of(f.scale_format))
                                        : pot_code(s);
}

// ---- blocks ---------------------------------------------------------------------------------

// The scale codes of a block from its largest and smallest values (hi = max(0, max x),
// lo = min(0, min x)), `bad` when it holds a NaN or Inf; returns the divisors that
// element_code takes (both 0 for a bad block, whose codes are then all 0).
struct Divisors {
  float pos, neg;
};
AMX_HD Divisors block_scales(float hi, float lo, bool bad, const Format& f, float g,
                             uint8_t* scales) {
  if (bad) {
    for (int s = 0; s < f.scales_per_block; ++s) scales[s] = scale_nan_code(f.scale_format);
    return {0.0f, 0.0f};
  }
  if (f.scales_per_block == 2) {
    scales[0] = scale_code(hi > 0.0f ? hi : 0.0f, f, g);
    scales[1] = scale_code(-lo > 0.0f ? -lo : 0.0f, f, g);
    return {scale_decode(scales[0], f.scale_format), scale_decode(scales[1], f.scale_format)};
  }
  const float amax = hi > -lo ? hi : -lo;
  scales[0] = scale_code(amax, f, g);
  float divisor = scale_decode(scales[0], f.scale_format);
  if (f.tensor_scale) divisor = divisor * g;
  return {divisor, divisor};
}

// The E2M1 code of one value of a block. Branch-free so that compilers vectorize it: the
// divisor is chosen per element, and an element whose divisor is not positive (an
// underflowed scale, or a bad block) gets code 0.
AMX_HD uint8_t element_code(float v, Divisors d) {
  const float divisor = v > 0.0f ? d.pos : d.neg;
  const float q = v / divisor;
  const uint8_t mag = e2m1_magnitude(q < 0.0f ? -q : q);
  const uint8_t code = uint8_t(mag | ((v < 0.0f && mag != 0) ? 8 : 0));
  return divisor > 0.0f ? code : uint8_t(0);
}

// Quantizes one block of n <= f.block values (the rest of the block is zero padding).
// codes: f.block / 2 bytes (element 2j in the low nibble of byte j); scales: scales_per_block.
// g: NVFP4's tensor scale (see tensor_scale below), ignored by the other formats.
AMX_HD void quantize_block(const float* x, int n, const Format& f, float g, uint8_t* codes,
                           uint8_t* scales) {
  // Starting from 0 gives max(0, max x) and min(0, min x): all that any scale rule uses
  // (pmax, nmax, amax), whether or not the block is padded.
  float hi = 0.0f, lo = 0.0f;
  bool bad = false;
  for (int i = 0; i < n; ++i) {
    const float v = x[i];
    bad |= !is_finite(v);
    hi = v > hi ? v : hi;
    lo = v < lo ? v : lo;
  }
  const Divisors d = block_scales(hi, lo, bad, f, g, scales);
  uint8_t element[32];  // every format's block is 16 or 32
  for (int i = 0; i < n; ++i) element[i] = element_code(x[i], d);
  for (int i = n; i < f.block; ++i) element[i] = 0;
  for (int j = 0; j < f.block / 2; ++j)
    codes[j] = uint8_t(element[2 * j] | (element[2 * j + 1] << 4));
}

// Decoded value of an element code of a block with these scale codes (NaN for a block whose
// scales are NaN codes).
AMX_HD float dequantize_code(uint8_t code, const uint8_t* scales, const Format& f, float g) {
  const uint8_t scale = (f.scales_per_block == 2 && (code & 8)) ? scales[1] : scales[0];
  float y = e2m1_decode(code) * scale_decode(scale, f.scale_format);
  if (f.tensor_scale) y = y * g;
  return y;
}

// Decoded value of element i of a block (NaN for a block whose scales are NaN codes).
AMX_HD float dequantize_element(const uint8_t* codes, const uint8_t* scales, int i, const Format& f,
                                float g) {
  return dequantize_code(uint8_t((codes[i >> 1] >> ((i & 1) * 4)) & 0xF), scales, f, g);
}

// NVFP4's g from the tensor's largest finite-block magnitude (amax / 2688; 0 gives 1).
AMX_HD float tensor_scale(float amax_over_finite_blocks) {
  const float g = amax_over_finite_blocks / kNvfp4TensorDivisor;
  return g == 0.0f ? 1.0f : g;
}

}  // namespace amx
