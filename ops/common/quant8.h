// Block-wise dynamic 8-bit state: bitsandbytes' signed dynamic code table and the exact-nearest quantizer, written
// once for every kernel that keeps 8-bit state (CPU today; the functions are host/device so a CUDA build can
// include this header). The Python side is ms_optim/quantization.py: same table, same rounding, same layout.
//
// Layout version 1 (kLayoutVersion): a float32 tensor of n elements is stored as uint8 codes (one per element)
// and float32 absmax values, one per block of kBlockSize = 256 consecutive elements of the flattened tensor
// (block-wise, ceil(n / 256) values, the last block partial) or one for the whole tensor (tensor-wise).
//   dequantize: x = code[q] * absmax
//   quantize:   absmax = max |x| over the block; q = the index of the code nearest to x / absmax (one float32
//               division; exactly nearest, a tie to the lower index); q = kZeroCode when absmax is 0.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#ifndef MS_OPTIM_HD
#if defined(__CUDACC__)
#define MS_OPTIM_HD __host__ __device__
#else
#define MS_OPTIM_HD
#endif
#endif

namespace ms_optim {
namespace quant8 {

constexpr int kLayoutVersion = 1;
constexpr int kBlockSize = 256;
constexpr int kZeroCode = 127;  // code[127] == 0.0f
constexpr int kOneCode = 255;   // code[255] == 1.0f

// Tables built once on the host (a CUDA build copies them to the device).
//   code[256]:       the signed dynamic map, sorted
//   threshold[256]:  threshold[k] (k < 255) is the largest float32 not above the exact midpoint of code[k] and
//                    code[k+1], so that for a float32 x, x > threshold[k] exactly when x is above that midpoint;
//                    threshold[255] = +inf
//   bin[2^16]:       for each value of the top 16 bits of a float32 (sign, exponent, 7 mantissa bits) - a bin -
//                    the code of the lowest float32 in the bin (upper 16 bits) and where the one threshold above
//                    it falls inside the bin (lower 16 bits; 0xFFFF when it is not inside). Every bin holds at most
//                    one threshold (checked when the tables are built: `ok`), and a threshold inside a bin shares
//                    the bin's top 16 bits with every x of the bin, so "x > threshold" is a comparison of the low
//                    16 bits (reversed for negative numbers): a code costs one table read and integer operations.
struct Tables {
  float code[256];
  float threshold[256];
  uint32_t bin[1 << 16];
  bool ok;
};

MS_OPTIM_HD inline uint32_t FloatBits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof(u));
  return u;
}

MS_OPTIM_HD inline float BitsFloat(uint32_t u) {
  float x;
  std::memcpy(&x, &u, sizeof(x));
  return x;
}

// The low 16 bits of a float32 in the order of the float32 values within its bin (reversed for negative numbers).
MS_OPTIM_HD inline uint32_t BinOrder(uint32_t bits) {
  return (bits ^ static_cast<uint32_t>(static_cast<int32_t>(bits) >> 31)) & 0xFFFFu;
}

// The code of a value already divided by its absmax (nominally in [-1, 1]; any float is mapped somewhere): the
// exact nearest entry of the table, a tie to the lower index.
MS_OPTIM_HD inline uint8_t Encode(const uint32_t *bin, float x) {
  const uint32_t bits = FloatBits(x);
  const uint32_t entry = bin[bits >> 16];
  return static_cast<uint8_t>((entry >> 16) + (BinOrder(bits) > (entry & 0xFFFFu) ? 1u : 0u));
}

MS_OPTIM_HD inline float Decode(const float *code, uint8_t q, float absmax) { return code[q] * absmax; }

// x / absmax, or 0 for an all-zero block.
MS_OPTIM_HD inline float Scaled(float x, float absmax) { return absmax > 0.0f ? x / absmax : 0.0f; }

// max |x| as the bits of a float: for |x| the IEEE order is the unsigned-integer order of the bits, so this is an
// integer max (which vectorizes; a float max reduction does not without fast-math). A NaN wins over every number.
MS_OPTIM_HD inline uint32_t AbsBitsMax(uint32_t acc, float x) {
  const uint32_t bits = FloatBits(x) & 0x7FFFFFFFu;
  return acc < bits ? bits : acc;
}

// A NaN absmax is stored as the canonical quiet NaN: which NaN survives an add of two NaNs depends on the operand
// order, which the compiler may choose, so the payload would differ between the scalar and SIMD loops.
MS_OPTIM_HD inline float CanonicalNan(float x) { return x != x ? BitsFloat(0x7FC00000u) : x; }

// bitsandbytes' create_dynamic_map(signed=True) in its own float32 arithmetic: for i = 0..6, the midpoints of
// torch.linspace(0.1, 1, 2^i + 1) (float32, each point one rounding: an FMA) times float32(10^(i-6)), both signs,
// plus 0 and 1, sorted.
inline void BuildCodeTable(float *code) {
  static const double kScale[7] = {1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0};
  int k = 0;
  code[k++] = 0.0f;
  code[k++] = 1.0f;
  for (int i = 0; i < 7; ++i) {
    const int n = (1 << i) + 1;
    const float start = 0.1f, end = 1.0f;
    const float step = (end - start) / static_cast<float>(n - 1);
    float bounds[65];
    for (int j = 0; j < n; ++j) {
      bounds[j] = j < n / 2 ? std::fma(step, static_cast<float>(j), start)
                            : std::fma(-step, static_cast<float>(n - 1 - j), end);
    }
    const float scale = static_cast<float>(kScale[i]);
    for (int j = 0; j + 1 < n; ++j) {
      const float mean = (bounds[j] + bounds[j + 1]) / 2.0f;
      code[k++] = scale * mean;
      code[k++] = -scale * mean;
    }
  }
  std::sort(code, code + 256);
}

inline void BuildTables(Tables *t) {
  BuildCodeTable(t->code);
  for (int k = 0; k < 255; ++k) {
    const double mid = (static_cast<double>(t->code[k]) + static_cast<double>(t->code[k + 1])) * 0.5;  // exact
    float below = static_cast<float>(mid);
    if (static_cast<double>(below) > mid) below = std::nextafter(below, -INFINITY);
    t->threshold[k] = below;
  }
  t->threshold[255] = INFINITY;
  // exact code of a float32: the number of thresholds below it (NaN: 255, where a sorted search puts it)
  auto exact = [t](float x) -> int {
    if (std::isnan(x)) return 255;
    return static_cast<int>(std::lower_bound(t->threshold, t->threshold + 255, x) - t->threshold);
  };
  t->ok = t->code[kZeroCode] == 0.0f && t->code[kOneCode] == 1.0f;
  for (uint32_t key = 0; key < (1u << 16); ++key) {
    const bool negative = (key & 0x8000u) != 0;
    const float lowest = BitsFloat(negative ? (key << 16) | 0xFFFFu : key << 16);
    const float highest = BitsFloat(negative ? key << 16 : (key << 16) | 0xFFFFu);
    // a bin whose lowest pattern is a NaN holds NaNs and at most -inf (its highest): start at the code of that
    const int lo = std::isnan(lowest) ? exact(highest) : exact(lowest), hi = exact(highest);
    uint32_t low16 = 0xFFFFu;  // no threshold inside the bin
    if (lo < 255) {
      const uint32_t thr_bits = FloatBits(t->threshold[lo]);
      if ((thr_bits >> 16) == key) low16 = BinOrder(thr_bits);
    }
    t->bin[key] = (static_cast<uint32_t>(lo) << 16) | low16;
    if (!std::isnan(lowest) && !std::isnan(highest)) {
      if (hi - lo > 1 || hi < lo) t->ok = false;
      if (Encode(t->bin, lowest) != lo || Encode(t->bin, highest) != hi) t->ok = false;
    }
  }
}

// The host tables, built on first use.
inline const Tables &HostTables() {
  static const Tables *tables = [] {
    auto *t = new Tables;
    BuildTables(t);
    return t;
  }();
  return *tables;
}

}  // namespace quant8
}  // namespace ms_optim
