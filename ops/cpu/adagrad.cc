// Fused Adagrad kernels for the CPU (mindspore.ops.Custom, func_type="aot"), bitsandbytes' Adagrad with float32
// or block-wise 8-bit state. The per-element math is AdagradStep (adagrad_math.h), the 8-bit layout and rounding
// are those of quant8.h; ms_optim/functional/adagrad.py is the reference path doing the same in MindSpore ops.
//
//   32-bit: one pass, in place: read p, g, s; write p, s (20 B per float32 element).
//   8-bit:  one block of 256 elements at a time, in cache: dequantize s = code[q] * absmax, update p and s, take
//           the block's new absmax = max |s|, re-quantize q = nearest code of s / absmax (read p, g, q; write p, q:
//           about 14 B per float32 element). Threads take whole blocks, so results do not depend on their number.
//           With one absmax for the whole tensor (block_wise=False) a first pass finds the new absmax (per-block
//           maxima, then their maximum; max is exact in any order) and a second one updates and re-quantizes.
// Percentile clipping is not done here: its factor (gnorm_scale) is a per-step scalar computed in graph ops
// (ms_optim/functional/adagrad.py: percentile_clip) and passed in; 1 when clipping is off.
#include "aot_support.h"
#include "adagrad_math.h"
#include "quant8.h"

#include <cstdlib>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define MS_OPTIM_AVX2 1
#endif

namespace ms_optim {
namespace {

constexpr int64_t kBlock = quant8::kBlockSize;

// The scalar inputs of a kernel call for `count` tensors: lr, gnorm_scale and weight_decay hold one value for all
// the tensors or one per tensor (per-group learning rates and weight decays, per-parameter clipping); eps one.
struct ScalarInputs {
  const float *values[3];  // lr, gnorm_scale, weight_decay
  bool per_tensor[3];
  float eps;

  AdagradScalars of(int t) const {
    auto at = [&](int i) { return values[i][per_tensor[i] ? t : 0]; };
    return AdagradScalars{at(0), at(1), at(2), eps};
  }
};

int ReadScalars(const AotArgs &a, int first, int count, ScalarInputs *k) {
  static const char *const names[] = {"lr", "gnorm_scale", "weight_decay"};
  for (int i = 0; i < 3; ++i) {
    if (int st = CheckPerTensorScalar(a, first + i, names[i], count); st != kOk) return st;
    k->values[i] = static_cast<const float *>(a.params[first + i]);
    k->per_tensor[i] = a.numel(first + i) != 1;
  }
  if (!a.is_f32_scalar(first + 3)) return a.reject_scalar(first + 3, "eps");
  k->eps = a.scalar(first + 3);
  return kOk;
}

// ---- 32-bit state

template <typename P>
inline void Adagrad32Range(int64_t begin, int64_t end, P *p, float *s, const P *g, const AdagradScalars &k) {
  for (int64_t i = begin; i < end; ++i) {
    float pi = Load(p, i);
    s[i] = AdagradStep(pi, s[i], Load(g, i), k);
    Store(p, i, pi);
  }
}

MS_OPTIM_SIMD_CLONES void Adagrad32F32(int64_t begin, int64_t end, float *__restrict p, float *__restrict s,
                                       const float *__restrict g, const AdagradScalars &k) {
  Adagrad32Range(begin, end, p, s, g, k);
}

// For N >= 1 tensors (all the parameters of a step with float32 state, in one call):
//   param[N], accum[N], grad[N], lr, gnorm_scale, weight_decay, eps -> flag (float32, 1)
// Every input is checked before anything is written.
int Adagrad32Kernel(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  const AotArgs a{nparam, params, ndims, shapes, dtypes};
  const int count = ListCount(nparam, 3, 5);
  if (count < 0) return kBadArgCount;
  const int kParam = 0, kAccum = count, kGrad = 2 * count, kScalars = 3 * count, kOut = 3 * count + 4;
  std::vector<int64_t> sizes(count);
  for (int t = 0; t < count; ++t) {
    const TensorChecks check{a, t, count, kParam, kGrad};
    if (int st = check.shapes(kAccum, "accum"); st != kOk) return st;
    if (a.dtype(kAccum + t) != DType::kF32) {
      return a.reject_dtype(kAccum + t, TensorName("accum", t, count).c_str(), "float32");
    }
    if (int st = check.dtypes(); st != kOk) return st;
    sizes[t] = a.numel(kParam + t);
  }
  ScalarInputs k;
  if (int st = ReadScalars(a, kScalars, count, &k); st != kOk) return st;
  if (int st = SetFlag(a, kOut); st != kOk) return st;  // the last check; the first write
  ParallelForTensors(count, sizes.data(), [&](int t, int64_t b, int64_t e) {
    DispatchFloat(a.dtype(kParam + t), [&](auto tag) {
      using P = decltype(tag);
      P *p = static_cast<P *>(params[kParam + t]);
      float *s = static_cast<float *>(params[kAccum + t]);
      const P *g = static_cast<const P *>(params[kGrad + t]);
      const AdagradScalars scalars = k.of(t);
      if constexpr (std::is_same_v<P, float>) {
        Adagrad32F32(b, e, p, s, g, scalars);
      } else {
        Adagrad32Range(b, e, p, s, g, scalars);
      }
      return static_cast<int>(kOk);
    });
  });
  return kOk;
}

// ---- 8-bit state

// q[j] = the code of x[j] / scale for j < len (kZeroCode when scale is not above 0): the one re-quantizing loop of
// the kernels and of MsOptimQuant8Quantize (so the tests of the quantizer run it too).
void EncodeBlock(const float *x, int64_t len, float scale, uint8_t *q, const quant8::Tables &t);

// Tensor-wise quantization (block_wise=False): every block dequantizes with `decode` (the tensor's absmax before
// the step) and re-quantizes with `encode` (after it). Passed by pointer, null for block-wise: the mode is never
// read from a scale's value (a NaN scale is a valid one).
struct TensorScales {
  float decode, encode;
};

// One block of up to 256 elements [begin, begin + len), in loops over a block-sized buffer that each vectorize:
// dequantize (a gather from the table), update p and s, absmax (an integer max of the bits), re-quantize
// (EncodeBlock). Returns the new absmax. With `encode_scale` (tensor-wise quantization) the codes use that absmax
// instead of the block's own; without `write` nothing is written (the first tensor-wise pass).
// always_inline: so that each SIMD clone of Block8F32 compiles the loops for its instruction set.
template <typename P>
__attribute__((always_inline)) inline float Block8(int64_t begin, int64_t len, P *__restrict p,
                                                   uint8_t *__restrict q, float absmax, const P *__restrict g,
                                                   const AdagradScalars &k, const quant8::Tables &t,
                                                   const float *encode_scale, bool write) {
  float s[kBlock];
  uint8_t *__restrict qb = q + begin;
  for (int64_t j = 0; j < len; ++j) s[j] = quant8::Decode(t.code, qb[j], absmax);
  for (int64_t j = 0; j < len; ++j) {
    float pj = Load(p, begin + j);
    s[j] = AdagradStep(pj, s[j], Load(g, begin + j), k);
    if (write) Store(p, begin + j, pj);
  }
  uint32_t amax_bits = 0;
  for (int64_t j = 0; j < len; ++j) amax_bits = quant8::AbsBitsMax(amax_bits, s[j]);
  const float amax = quant8::CanonicalNan(quant8::BitsFloat(amax_bits));
  if (!write) return amax;
  EncodeBlock(s, len, encode_scale != nullptr ? *encode_scale : amax, qb, t);
  return amax;
}

MS_OPTIM_SIMD_CLONES float Block8F32(int64_t begin, int64_t len, float *p, uint8_t *q, float absmax, const float *g,
                                     const AdagradScalars &k, const quant8::Tables &t, const float *encode_scale,
                                     bool write) {
  return Block8(begin, len, p, q, absmax, g, k, t, encode_scale, write);
}

#ifdef MS_OPTIM_AVX2
// ---- AVX2 specializations of the 8-bit block (x86-64, chosen at run time): the same operations in the same
// order as Decode / AdagradStep / AbsBitsMax / Encode, 8 elements at a time, so the results are those of the
// scalar definitions bit for bit (IEEE multiply, add, divide and square root round the same in every lane; no
// FMA). The compiler does not vectorize the table reads (gathers) and the byte stores of the scalar forms. The
// 8-bit step is bound by instruction throughput (table reads as scalar loads: on AMD Zen the gather instruction is
// slower) and by the divider (two divisions and a square root per element in the scalar form), so
//   - dequantize, update and absmax run in one loop over the block (the sums go to a block buffer in L1), and
//     block b's update runs in the same loop as block b - 1's re-quantizing (UpdateEncode);
//   - re-quantizing does not divide: it multiplies by r = 1 / absmax (one division per block), which puts
//     x * r within a few units in the last place of the true quotient x / absmax; the code of x * r is the code of
//     x / absmax unless a threshold lies within kMargin float32 patterns of x * r, which the table below makes a
//     two-instruction test; only the 8-value vectors where it is undecided are divided. The block's absmax itself
//     (x / absmax = 1.0 exactly, x * r at an end of a bin, which the test leaves undecided) is taken out first
//     (OneIfScale): it made one vector in every block go the slow way; on Adagrad sums about 1 value in 4000 is
//     left to divide.
namespace avx2 {

// x * r with r = RN(1 / a) against RN(x / a): |x*r - x/a| <= (2u + u^2)|x/a| and |RN(x/a) - x/a| <= u|x/a|
// (u = 2^-24), together under 3 units in the last place of x / a, at most 6 float32 patterns apart across a power
// of 2 (subnormal results: under 2); kMargin leaves room. Valid while r is a normal number and x * r does not
// overflow: the block's scale must lie in [2^-125, 2^125] (else every value is divided) and bins at or above
// 2^64 are flagged (|x / scale| <= 1 in the kernels; any float is still encoded exactly).
constexpr int kMargin = 8;
constexpr float kMinScale = 0x1p-125f, kMaxScale = 0x1p125f;

// A float32's position in value order as an unsigned integer (-NaN < -inf < ... < -0 < +0 < ... < +inf < NaN).
inline uint32_t ValueKey(uint32_t bits) { return (bits & 0x80000000u) ? ~bits : bits | 0x80000000u; }
inline uint32_t KeyBits(uint32_t key) { return (key & 0x80000000u) ? key & 0x7FFFFFFFu : ~key; }

// The bin table of the shortcut. For each bin, first: (code, offset) such that the code of x * r is
// code + (BinOrder(x * r) > offset) wherever the shortcut is decided, which is wherever
// |BinOrder(x * r) - offset| > kMargin and the bin is not flagged. Mostly quant8's own entry (the code of the bin's
// lowest value, the offset of the threshold inside the bin or 0xFFFF). Near the ends of a bin the code may change
// just across, in the neighbouring bin: at the upper end an entry without a threshold inside already leaves the
// last kMargin offsets undecided (and the first kMargin: the test works modulo 2^16); at the lower end such an entry becomes (code - 1, offset 0), which decides the
// same codes everywhere but the first kMargin + 1 offsets. A threshold inside near the end where the change is
// covers it too; any other bin (a threshold inside away from a nearby change across an end, or changes near both
// ends) is flagged, as are the bins of NaN, the infinities and values >= 2^64.
// Then the entry is stored as E = ((code - h) << 16) + (0xFFFF - offset) (mod 2^32), h being the top 16 bits of
// the bin's values after the BinOrder flip (key, or key ^ 0xFFFF for negative numbers): for x * r of that bin,
// v = (bits ^ (bits >> 31, arithmetic)) + E = (code << 16) + BinOrder + 0xFFFF - offset, so v >> 16 is the code
// and the low 16 bits of v tell how far the value is from the offset (EncodeY8). A flagged bin gets
// E = (0x8000 - h) << 16: bit 31 of v set.
inline const uint32_t *ShortcutBins(const quant8::Tables &t) {
  static const uint32_t *bins = [&t] {
    auto *b = new uint32_t[1 << 16];
    auto code_at = [&t](uint32_t key) { return quant8::Encode(t.bin, quant8::BitsFloat(KeyBits(key))); };
    // does the code change within kMargin value-order patterns of `key`?
    auto changes_near = [&](uint32_t key) {
      const uint8_t c = code_at(key);
      for (uint32_t d = key - kMargin; d != key + kMargin + 1; ++d) {
        if (code_at(d) != c) return true;
      }
      return false;
    };
    for (uint32_t key = 0; key < (1u << 16); ++key) {
      const uint32_t entry = t.bin[key];
      uint32_t code = entry >> 16, offset = entry & 0xFFFFu;
      bool flag = ((key >> 7) & 0xFFu) >= 127u + 64u;
      if (!flag) {
        const uint32_t k0 = ValueKey(key << 16), k1 = ValueKey((key << 16) | 0xFFFFu);
        const bool low = changes_near(std::min(k0, k1)), high = changes_near(std::max(k0, k1));  // the bin's ends
        const bool inside = offset != 0xFFFFu;
        if (low && high) {
          flag = true;
        } else if (low) {
          if (!inside) {
            code -= 1;  // >= 0: the code changes below the bin's lowest value
            offset = 0;
          } else if (offset >= kMargin) {
            flag = true;
          }
        } else if (high && inside && offset <= 0xFFFFu - kMargin) {
          flag = true;
        }
      }
      const uint32_t h = (key & 0x8000u) ? key ^ 0xFFFFu : key;
      b[key] = flag ? (0x8000u - h) << 16 : ((code - h) << 16) + (0xFFFFu - offset);
    }
    return b;
  }();
  return bins;
}

// table[bits[i] >> 16] for the 8 lanes of bits, by scalar loads.
__attribute__((target("avx2"))) inline __m256i LookupBins8(const uint32_t *table, __m256i bits) {
  const __m128i lo = _mm256_castsi256_si128(bits), hi = _mm256_extracti128_si256(bits, 1);
  const uint64_t a = static_cast<uint64_t>(_mm_cvtsi128_si64(lo)), b = static_cast<uint64_t>(_mm_extract_epi64(lo, 1));
  const uint64_t c = static_cast<uint64_t>(_mm_cvtsi128_si64(hi)), d = static_cast<uint64_t>(_mm_extract_epi64(hi, 1));
  return _mm256_setr_epi32(table[static_cast<uint32_t>(a) >> 16], table[a >> 48], table[static_cast<uint32_t>(b) >> 16],
                           table[b >> 48], table[static_cast<uint32_t>(c) >> 16], table[c >> 48],
                           table[static_cast<uint32_t>(d) >> 16], table[d >> 48]);
}

// quant8::Encode for the 8 values whose float32 bits are `bits` (quant8's bin table).
__attribute__((target("avx2"))) inline __m256i EncodeBits8(__m256i bits, const uint32_t *bin) {
  const __m256i mask = _mm256_set1_epi32(0xFFFF);
  const __m256i entry = LookupBins8(bin, bits);
  const __m256i order = _mm256_and_si256(_mm256_xor_si256(bits, _mm256_srai_epi32(bits, 31)), mask);  // BinOrder
  const __m256i above = _mm256_cmpgt_epi32(order, _mm256_and_si256(entry, mask));  // -1 where above the threshold
  return _mm256_sub_epi32(_mm256_srli_epi32(entry, 16), above);
}

// Codes of x / scale for 8 values, dividing.
__attribute__((target("avx2"))) inline __m256i EncodeDiv8(const float *x, __m256 scale, const uint32_t *bin) {
  return EncodeBits8(_mm256_castps_si256(_mm256_div_ps(_mm256_loadu_ps(x), scale)), bin);
}

// y[0, kBlock) = x * r: stored a loop ahead of EncodeY8, which reads the top halves of y by scalar loads (an
// 8-lane vector goes to general registers no faster; a load right after the store would wait for it).
__attribute__((target("avx2"))) inline void ScaleBlock(const float *x, __m256 r, float *y) {
  for (int64_t j = 0; j < kBlock; j += 8) _mm256_store_ps(y + j, _mm256_mul_ps(_mm256_loadu_ps(x + j), r));
}

// Codes of x / scale for 8 values from y = x * r (r = 1 / scale, ScaleBlock); *undecided gets the lanes where the
// shortcut does not decide (nonzero 16-bit halves), which the caller re-encodes by division.
__attribute__((target("avx2"))) inline __m256i EncodeY8(const float *y, const uint32_t *fast, __m256i *undecided) {
  const __m256i bits = _mm256_load_si256(reinterpret_cast<const __m256i *>(y));
  uint16_t h[16];  // the top halves, h[2 i + 1] (little-endian)
  std::memcpy(h, y, sizeof(h));
  const __m256i e = _mm256_setr_epi32(fast[h[1]], fast[h[3]], fast[h[5]], fast[h[7]], fast[h[9]], fast[h[11]],
                                      fast[h[13]], fast[h[15]]);
  const __m256i v = _mm256_add_epi32(_mm256_xor_si256(bits, _mm256_srai_epi32(bits, 31)), e);
  // undecided: BinOrder - offset in [-kMargin, kMargin], i.e. (low 16 bits of v) + kMargin + 1 in [0, 2 kMargin]
  // (mod 2^16; as int16 after subtracting 0x8000: below 2 kMargin + 1 - 0x8000), or bit 31 of v set (the high
  // 16-bit half, left as it is, compared below 0)
  const __m256i near = _mm256_add_epi16(v, _mm256_set1_epi32((kMargin + 1 - 0x8000) & 0xFFFF));
  *undecided = _mm256_cmpgt_epi16(_mm256_set1_epi32((2 * kMargin + 1 - 0x8000) & 0xFFFF), near);
  return _mm256_srli_epi32(v, 16);
}

// Stores 4 x 8 codes (each in [0, 255]) as 32 bytes.
__attribute__((target("avx2"))) inline void Store32(uint8_t *q, __m256i a, __m256i b, __m256i c, __m256i d) {
  const __m256i lane_order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);  // undo the per-lane packing
  const __m256i ab = _mm256_packus_epi32(a, b), cd = _mm256_packus_epi32(c, d);
  _mm256_storeu_si256(reinterpret_cast<__m256i *>(q),
                      _mm256_permutevar8x32_epi32(_mm256_packus_epi16(ab, cd), lane_order));
}

// Where x[0, 8) equals the scale, the code is kOneCode (x / scale = 1.0 exactly) and the lane is decided: x * r is
// 1.0 or the float just below it, at an end of a bin, which the shortcut test leaves undecided - in every block,
// since the block's absmax is one of its values.
__attribute__((target("avx2"))) inline void OneIfScale(const float *x, __m256 scale, __m256i *c, __m256i *undecided) {
  const __m256i one = _mm256_castps_si256(_mm256_cmp_ps(_mm256_loadu_ps(x), scale, _CMP_EQ_OQ));
  *c = _mm256_blendv_epi8(*c, _mm256_set1_epi32(quant8::kOneCode), one);
  *undecided = _mm256_andnot_si256(one, *undecided);
}

// Stores the codes c0..c3 of x[0, 32) / scale (EncodeY8), those of the 8 values where an undecided mask u0..u3
// is set replaced by the codes by division (typically once a block: the block's absmax itself gives x * r = 1.0 or
// next to it, the lowest values of a bin, which the test leaves undecided).
__attribute__((target("avx2"))) inline void Store32Rcp(uint8_t *q, const float *x, __m256 scale, const uint32_t *bin,
                                                     __m256i c0, __m256i c1, __m256i c2, __m256i c3, __m256i u0,
                                                     __m256i u1, __m256i u2, __m256i u3) {
  // an element equal to the scale (the block's absmax) is 1.0 exactly, code kOneCode: decided here
  OneIfScale(x, scale, &c0, &u0);
  OneIfScale(x + 8, scale, &c1, &u1);
  OneIfScale(x + 16, scale, &c2, &u2);
  OneIfScale(x + 24, scale, &c3, &u3);
  const __m256i u = _mm256_or_si256(_mm256_or_si256(u0, u1), _mm256_or_si256(u2, u3));
  if (__builtin_expect(!_mm256_testz_si256(u, u), 0)) {
    if (!_mm256_testz_si256(u0, u0)) c0 = EncodeDiv8(x, scale, bin);
    if (!_mm256_testz_si256(u1, u1)) c1 = EncodeDiv8(x + 8, scale, bin);
    if (!_mm256_testz_si256(u2, u2)) c2 = EncodeDiv8(x + 16, scale, bin);
    if (!_mm256_testz_si256(u3, u3)) c3 = EncodeDiv8(x + 24, scale, bin);
  }
  Store32(q, c0, c1, c2, c3);
}

// A whole block (kBlock values, a multiple of 32) with scale > 0.
__attribute__((target("avx2"))) void EncodeBlock(const float *x, float scale, uint8_t *q, const quant8::Tables &t) {
  const __m256 vscale = _mm256_set1_ps(scale);
  const uint32_t *bin = t.bin;
  if (scale >= kMinScale && scale <= kMaxScale) {
    const uint32_t *fast = ShortcutBins(t);
    alignas(32) float y[kBlock];
    ScaleBlock(x, _mm256_set1_ps(1.0f / scale), y);
    for (int64_t j = 0; j < kBlock; j += 32) {
      __m256i u0, u1, u2, u3;
      const __m256i c0 = EncodeY8(y + j, fast, &u0), c1 = EncodeY8(y + j + 8, fast, &u1);
      const __m256i c2 = EncodeY8(y + j + 16, fast, &u2), c3 = EncodeY8(y + j + 24, fast, &u3);
      Store32Rcp(q + j, x + j, vscale, bin, c0, c1, c2, c3, u0, u1, u2, u3);
    }
  } else {
    for (int64_t j = 0; j < kBlock; j += 32) {
      Store32(q + j, EncodeDiv8(x + j, vscale, bin), EncodeDiv8(x + j + 8, vscale, bin),
              EncodeDiv8(x + j + 16, vscale, bin), EncodeDiv8(x + j + 24, vscale, bin));
    }
  }
}

// The broadcast scalars of AdagradStep and a block's dequantizing absmax.
struct Step8 {
  __m256 absmax, lr, gs, wd, eps;
};

__attribute__((target("avx2"))) inline Step8 MakeStep8(float absmax, const AdagradScalars &k) {
  return Step8{_mm256_set1_ps(absmax), _mm256_set1_ps(k.lr), _mm256_set1_ps(k.gnorm_scale),
               _mm256_set1_ps(k.weight_decay), _mm256_set1_ps(k.eps)};
}

// Decode, AdagradStep and AbsBitsMax for 8 elements: p updated in place (when kWrite), the new sums to s,
// their |bits| folded into amax.
template <bool kWrite>
__attribute__((target("avx2"))) inline void Update8(const uint8_t *qb, float *p, const float *g, const Step8 &k,
                                                    const float *code, float *s, __m256i *amax) {
  const __m256 old = _mm256_setr_ps(code[qb[0]], code[qb[1]], code[qb[2]], code[qb[3]], code[qb[4]], code[qb[5]],
                                    code[qb[6]], code[qb[7]]);
  __m256 sj = _mm256_mul_ps(old, k.absmax);                                         // Decode
  __m256 pj = _mm256_loadu_ps(p);
  const __m256 gj = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(g), k.gs), _mm256_mul_ps(k.wd, pj));
  sj = _mm256_add_ps(sj, _mm256_mul_ps(gj, gj));
  pj = _mm256_sub_ps(pj, _mm256_mul_ps(k.lr, _mm256_div_ps(gj, _mm256_add_ps(_mm256_sqrt_ps(sj), k.eps))));
  if (kWrite) _mm256_storeu_ps(p, pj);
  _mm256_store_ps(s, sj);
  *amax = _mm256_max_epu32(*amax, _mm256_and_si256(_mm256_castps_si256(sj), _mm256_set1_epi32(0x7FFFFFFF)));
}

__attribute__((target("avx2"))) inline float MaxBits(__m256i amax) {
  __m128i m = _mm_max_epu32(_mm256_castsi256_si128(amax), _mm256_extracti128_si256(amax, 1));
  m = _mm_max_epu32(m, _mm_shuffle_epi32(m, 0x4E));
  m = _mm_max_epu32(m, _mm_shuffle_epi32(m, 0xB1));
  return quant8::CanonicalNan(quant8::BitsFloat(static_cast<uint32_t>(_mm_cvtsi128_si32(m))));
}

// Decode, AdagradStep and AbsBitsMax over a whole float32 block: p updated in place (when kWrite), the new sums in
// s[0, kBlock); returns their absmax.
template <bool kWrite>
__attribute__((target("avx2"))) float Update(const uint8_t *qb, float absmax, float *p, const float *g,
                                             const AdagradScalars &k, const float *code, float *s) {
  const Step8 k8 = MakeStep8(absmax, k);
  __m256i amax = _mm256_setzero_si256();
  for (int64_t j = 0; j < kBlock; j += 8) Update8<kWrite>(qb + j, p + j, g + j, k8, code, s + j, &amax);
  return MaxBits(amax);
}

// As Update (writing), while re-quantizing the previous block: the codes of x[0, kBlock) / scale to xq, through
// x * r (r = 1 / scale, scale in [kMinScale, kMaxScale]). The two interleaved keep the divider (the update) and
// the load and integer units (the table reads of both) busy together.
__attribute__((target("avx2"))) float UpdateEncode(const uint8_t *qb, float absmax, float *p, const float *g,
                                                   const AdagradScalars &k, const quant8::Tables &t, float *s,
                                                   const float *x, float scale, uint8_t *xq) {
  const Step8 k8 = MakeStep8(absmax, k);
  const __m256 vscale = _mm256_set1_ps(scale);
  const uint32_t *fast = ShortcutBins(t), *bin = t.bin;
  __m256i amax = _mm256_setzero_si256();
  alignas(32) float y[kBlock];
  ScaleBlock(x, _mm256_set1_ps(1.0f / scale), y);
  for (int64_t j = 0; j < kBlock; j += 32) {
    __m256i u0, u1, u2, u3;
    Update8<true>(qb + j, p + j, g + j, k8, t.code, s + j, &amax);
    const __m256i c0 = EncodeY8(y + j, fast, &u0);
    Update8<true>(qb + j + 8, p + j + 8, g + j + 8, k8, t.code, s + j + 8, &amax);
    const __m256i c1 = EncodeY8(y + j + 8, fast, &u1);
    Update8<true>(qb + j + 16, p + j + 16, g + j + 16, k8, t.code, s + j + 16, &amax);
    const __m256i c2 = EncodeY8(y + j + 16, fast, &u2);
    Update8<true>(qb + j + 24, p + j + 24, g + j + 24, k8, t.code, s + j + 24, &amax);
    const __m256i c3 = EncodeY8(y + j + 24, fast, &u3);
    Store32Rcp(xq + j, x + j, vscale, bin, c0, c1, c2, c3, u0, u1, u2, u3);
  }
  return MaxBits(amax);
}

}  // namespace avx2

// ---- AVX-512 specializations (x86-64 with AVX-512F and AVX-512BW, chosen at run time): the AVX2 block loop 16
// elements at a time, with the table reads as gathers (one instruction for 16 reads, where AVX2 needs 8 scalar
// loads and 7 inserts) and the codes stored by one narrowing move. Same operations in the same order as the scalar
// definitions and the AVX2 forms (the same shortcut table, margin and division fallback), so bit for bit the same
// results; tests/test_adagrad.py runs the kernels under each instruction set the machine has (MS_OPTIM_QUANT8_SIMD)
// and compares them.
#define MS_OPTIM_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
// GCC 12 warns inside its own AVX-512 headers (the "undefined" vectors its intrinsics start from); false positives.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
namespace avx512 {

using avx2::kMargin;
using avx2::kMaxScale;
using avx2::kMinScale;

// quant8::Encode for the 16 values whose float32 bits are `bits` (quant8's bin table).
MS_OPTIM_TARGET_AVX512 inline __m512i EncodeBits16(__m512i bits, const uint32_t *bin) {
  const __m512i mask = _mm512_set1_epi32(0xFFFF);
  const __m512i entry = _mm512_i32gather_epi32(_mm512_srli_epi32(bits, 16), bin, 4);
  const __m512i order = _mm512_and_si512(_mm512_xor_si512(bits, _mm512_srai_epi32(bits, 31)), mask);  // BinOrder
  const __mmask16 above = _mm512_cmpgt_epu32_mask(order, _mm512_and_si512(entry, mask));
  const __m512i code = _mm512_srli_epi32(entry, 16);
  return _mm512_mask_add_epi32(code, above, code, _mm512_set1_epi32(1));
}

// Codes of y = x * r for 16 values (avx2::EncodeY8's shortcut, the undecided test on 32-bit lanes); returns in
// *undecided the lanes where it does not decide.
MS_OPTIM_TARGET_AVX512 inline __m512i EncodeY16(__m512 y, const uint32_t *fast, __mmask16 *undecided) {
  const __m512i bits = _mm512_castps_si512(y);
  const __m512i e = _mm512_i32gather_epi32(_mm512_srli_epi32(bits, 16), fast, 4);
  const __m512i v = _mm512_add_epi32(_mm512_xor_si512(bits, _mm512_srai_epi32(bits, 31)), e);
  // BinOrder - offset in [-kMargin, kMargin] (mod 2^16), or a flagged bin (bit 31 of v)
  const __m512i near = _mm512_and_si512(_mm512_add_epi32(v, _mm512_set1_epi32(kMargin + 1)), _mm512_set1_epi32(0xFFFF));
  *undecided = _mm512_cmple_epu32_mask(near, _mm512_set1_epi32(2 * kMargin)) |
               _mm512_cmplt_epi32_mask(v, _mm512_setzero_si512());
  return _mm512_srli_epi32(v, 16);
}

// The codes of x[0, 16) / scale to q, through x * r (r = 1 / scale, scale in [kMinScale, kMaxScale]); an element
// equal to the scale gets kOneCode (avx2::OneIfScale), the other undecided lanes (rare) are divided.
MS_OPTIM_TARGET_AVX512 inline void Encode16(const float *x, __m512 r, __m512 scale, const uint32_t *fast,
                                              const uint32_t *bin, uint8_t *q) {
  const __m512 xj = _mm512_loadu_ps(x);
  __mmask16 undecided;
  __m512i c = EncodeY16(_mm512_mul_ps(xj, r), fast, &undecided);
  const __mmask16 one = _mm512_cmp_ps_mask(xj, scale, _CMP_EQ_OQ);
  c = _mm512_mask_mov_epi32(c, one, _mm512_set1_epi32(quant8::kOneCode));
  undecided &= static_cast<__mmask16>(~one);
  if (__builtin_expect(undecided != 0, 0)) {
    c = _mm512_mask_mov_epi32(c, undecided, EncodeBits16(_mm512_castps_si512(_mm512_div_ps(xj, scale)), bin));
  }
  _mm_storeu_si128(reinterpret_cast<__m128i *>(q), _mm512_cvtepi32_epi8(c));
}

// A whole block (kBlock values) with scale > 0.
MS_OPTIM_TARGET_AVX512 void EncodeBlock(const float *x, float scale, uint8_t *q, const quant8::Tables &t) {
  const __m512 vscale = _mm512_set1_ps(scale);
  if (scale >= kMinScale && scale <= kMaxScale) {
    const __m512 r = _mm512_set1_ps(1.0f / scale);
    const uint32_t *fast = avx2::ShortcutBins(t);
    for (int64_t j = 0; j < kBlock; j += 16) Encode16(x + j, r, vscale, fast, t.bin, q + j);
  } else {
    for (int64_t j = 0; j < kBlock; j += 16) {
      const __m512i c = EncodeBits16(_mm512_castps_si512(_mm512_div_ps(_mm512_loadu_ps(x + j), vscale)), t.bin);
      _mm_storeu_si128(reinterpret_cast<__m128i *>(q + j), _mm512_cvtepi32_epi8(c));
    }
  }
}

// The code table in registers: 16 vectors of 16 floats.
struct CodeRegs {
  __m512 t[16];
};

MS_OPTIM_TARGET_AVX512 inline CodeRegs LoadCode(const float *code) {
  CodeRegs c;
  for (int i = 0; i < 16; ++i) c.t[i] = _mm512_loadu_ps(code + 16 * i);
  return c;
}

// code[q] for 16 codes: eight two-vector permutes (32 entries each, by the low 5 bits), then a select by each of
// the 3 high bits.
MS_OPTIM_TARGET_AVX512 inline __m512 Decode16(__m512i q, const CodeRegs &c) {
  __m512 a[8];
  for (int i = 0; i < 8; ++i) a[i] = _mm512_permutex2var_ps(c.t[2 * i], q, c.t[2 * i + 1]);
  const __mmask16 b5 = _mm512_test_epi32_mask(q, _mm512_set1_epi32(32));
  const __mmask16 b6 = _mm512_test_epi32_mask(q, _mm512_set1_epi32(64));
  const __mmask16 b7 = _mm512_test_epi32_mask(q, _mm512_set1_epi32(128));
  for (int i = 0; i < 4; ++i) a[i] = _mm512_mask_blend_ps(b5, a[2 * i], a[2 * i + 1]);
  for (int i = 0; i < 2; ++i) a[i] = _mm512_mask_blend_ps(b6, a[2 * i], a[2 * i + 1]);
  return _mm512_mask_blend_ps(b7, a[0], a[1]);
}

// Decode16 for codes in [kZeroCode, 255] (non-negative values: every code of an Adagrad sum), in half the
// permutes: the upper half of the table by the low 7 bits, kZeroCode (whose low 7 bits point at 1.0) set to 0.
MS_OPTIM_TARGET_AVX512 inline __m512 DecodeUpper16(__m512i q, const CodeRegs &c) {
  __m512 a[4];
  for (int i = 0; i < 4; ++i) a[i] = _mm512_permutex2var_ps(c.t[8 + 2 * i], q, c.t[9 + 2 * i]);
  const __mmask16 b5 = _mm512_test_epi32_mask(q, _mm512_set1_epi32(32));
  const __mmask16 b6 = _mm512_test_epi32_mask(q, _mm512_set1_epi32(64));
  const __m512 v = _mm512_mask_blend_ps(b6, _mm512_mask_blend_ps(b5, a[0], a[1]), _mm512_mask_blend_ps(b5, a[2], a[3]));
  return _mm512_mask_mov_ps(v, _mm512_cmpeq_epi32_mask(q, _mm512_set1_epi32(quant8::kZeroCode)), _mm512_setzero_ps());
}

// Whether every code of a whole block is at least kZeroCode (DecodeUpper16 applies).
MS_OPTIM_TARGET_AVX512 inline bool UpperCodes(const uint8_t *qb) {
  __m512i m = _mm512_min_epu8(_mm512_loadu_si512(qb), _mm512_loadu_si512(qb + 64));
  m = _mm512_min_epu8(m, _mm512_min_epu8(_mm512_loadu_si512(qb + 128), _mm512_loadu_si512(qb + 192)));
  return _mm512_cmplt_epu8_mask(m, _mm512_set1_epi8(quant8::kZeroCode)) == 0;
}

struct Step16 {
  __m512 absmax, lr, gs, wd, eps;
};

MS_OPTIM_TARGET_AVX512 inline Step16 MakeStep16(float absmax, const AdagradScalars &k) {
  return Step16{_mm512_set1_ps(absmax), _mm512_set1_ps(k.lr), _mm512_set1_ps(k.gnorm_scale),
                _mm512_set1_ps(k.weight_decay), _mm512_set1_ps(k.eps)};
}

// avx2::Update8 for 16 elements (kUpper: every code at least kZeroCode).
template <bool kWrite, bool kUpper>
MS_OPTIM_TARGET_AVX512 inline void Update16(const uint8_t *qb, float *p, const float *g, const Step16 &k,
                                              const CodeRegs &code, float *s, __m512i *amax) {
  const __m512i qi = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(qb)));
  __m512 sj = _mm512_mul_ps(kUpper ? DecodeUpper16(qi, code) : Decode16(qi, code), k.absmax);  // Decode
  __m512 pj = _mm512_loadu_ps(p);
  const __m512 gj = _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(g), k.gs), _mm512_mul_ps(k.wd, pj));
  sj = _mm512_add_ps(sj, _mm512_mul_ps(gj, gj));
  pj = _mm512_sub_ps(pj, _mm512_mul_ps(k.lr, _mm512_div_ps(gj, _mm512_add_ps(_mm512_sqrt_ps(sj), k.eps))));
  if (kWrite) _mm512_storeu_ps(p, pj);
  _mm512_store_ps(s, sj);
  *amax = _mm512_max_epu32(*amax, _mm512_and_si512(_mm512_castps_si512(sj), _mm512_set1_epi32(0x7FFFFFFF)));
}

// avx2::Update: decode, update and absmax over a whole block.
template <bool kWrite>
MS_OPTIM_TARGET_AVX512 float Update(const uint8_t *qb, float absmax, float *p, const float *g,
                                    const AdagradScalars &k, const float *code, float *s) {
  const Step16 k16 = MakeStep16(absmax, k);
  const CodeRegs c = LoadCode(code);
  __m512i amax = _mm512_setzero_si512();
  if (UpperCodes(qb)) {
    for (int64_t j = 0; j < kBlock; j += 16) Update16<kWrite, true>(qb + j, p + j, g + j, k16, c, s + j, &amax);
  } else {
    for (int64_t j = 0; j < kBlock; j += 16) Update16<kWrite, false>(qb + j, p + j, g + j, k16, c, s + j, &amax);
  }
  return quant8::CanonicalNan(quant8::BitsFloat(_mm512_reduce_max_epu32(amax)));
}

// avx2::UpdateEncode: block b's update in the same loop as block b - 1's re-quantizing.
MS_OPTIM_TARGET_AVX512 float UpdateEncode(const uint8_t *qb, float absmax, float *p, const float *g,
                                          const AdagradScalars &k, const quant8::Tables &t, float *s,
                                          const float *x, float scale, uint8_t *xq) {
  const Step16 k16 = MakeStep16(absmax, k);
  const __m512 vscale = _mm512_set1_ps(scale), r = _mm512_set1_ps(1.0f / scale);
  const uint32_t *fast = avx2::ShortcutBins(t);
  const CodeRegs c = LoadCode(t.code);
  __m512i amax = _mm512_setzero_si512();
  if (UpperCodes(qb)) {
    for (int64_t j = 0; j < kBlock; j += 16) {
      Update16<true, true>(qb + j, p + j, g + j, k16, c, s + j, &amax);
      Encode16(x + j, r, vscale, fast, t.bin, xq + j);
    }
  } else {
    for (int64_t j = 0; j < kBlock; j += 16) {
      Update16<true, false>(qb + j, p + j, g + j, k16, c, s + j, &amax);
      Encode16(x + j, r, vscale, fast, t.bin, xq + j);
    }
  }
  return quant8::CanonicalNan(quant8::BitsFloat(_mm512_reduce_max_epu32(amax)));
}

}  // namespace avx512
#pragma GCC diagnostic pop

// The instruction set of the hand-written 8-bit loops: the best the CPU has, capped by MS_OPTIM_QUANT8_SIMD
// ("avx512", "avx2" or "none"; for tests that compare them, and for diagnosis).
enum class Simd { kNone, kAvx2, kAvx512 };

inline Simd Quant8Simd() {
  static const Simd simd = [] {
    Simd best = Simd::kNone;
    if (__builtin_cpu_supports("avx2")) best = Simd::kAvx2;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")) {
      best = Simd::kAvx512;
    }
    const char *cap = std::getenv("MS_OPTIM_QUANT8_SIMD");
    Simd limit = Simd::kAvx512;
    if (cap != nullptr && std::strcmp(cap, "avx2") == 0) {
      limit = Simd::kAvx2;
    } else if (cap != nullptr && std::strcmp(cap, "none") == 0) {
      limit = Simd::kNone;
    } else if (cap != nullptr && *cap != '\0' && std::strcmp(cap, "avx512") != 0) {
      std::fprintf(stderr, "ms_optim: MS_OPTIM_QUANT8_SIMD=%s is not avx512, avx2 or none; ignored\n", cap);
    }
    return std::min(best, limit);
  }();
  return simd;
}

// Blocks [b0, b1) of a float32 tensor, all whole, updated and re-quantized: block b's update runs together with
// block b - 1's re-quantizing (UpdateEncode). Block-wise (no `tensor`): each block dequantizes with
// absmax[b], which then gets the block's new absmax, the one its codes use. Tensor-wise: every block dequantizes
// with tensor->decode and re-quantizes with tensor->encode; absmax is not touched.
// The two block loops of one instruction set: Update (writing) and UpdateEncode.
using UpdateFn = float (*)(const uint8_t *, float, float *, const float *, const AdagradScalars &, const float *,
                           float *);
using UpdateEncodeFn = float (*)(const uint8_t *, float, float *, const float *, const AdagradScalars &,
                                 const quant8::Tables &, float *, const float *, float, uint8_t *);

template <UpdateFn Update, UpdateEncodeFn UpdateEncode>
void Blocks(int64_t b0, int64_t b1, float *p, uint8_t *q, float *absmax, const float *g, const AdagradScalars &k,
            const quant8::Tables &t, const TensorScales *tensor) {
  alignas(64) float buf[2][kBlock];  // 64: the AVX-512 loops store to it aligned
  float prev_scale = 0.0f;
  for (int64_t b = b0; b < b1; ++b) {
    float *s = buf[b & 1], *prev = buf[(b - 1) & 1];
    const int64_t begin = b * kBlock;
    const float old = tensor != nullptr ? tensor->decode : absmax[b];
    float amax;
    if (b > b0 && prev_scale >= avx2::kMinScale && prev_scale <= avx2::kMaxScale) {
      amax = UpdateEncode(q + begin, old, p + begin, g + begin, k, t, s, prev, prev_scale, q + begin - kBlock);
    } else {
      if (b > b0) ms_optim::EncodeBlock(prev, kBlock, prev_scale, q + begin - kBlock, t);
      amax = Update(q + begin, old, p + begin, g + begin, k, t.code, s);
    }
    if (tensor == nullptr) absmax[b] = amax;
    prev_scale = tensor != nullptr ? tensor->encode : amax;
  }
  if (b1 > b0) ms_optim::EncodeBlock(buf[(b1 - 1) & 1], kBlock, prev_scale, q + (b1 - 1) * kBlock, t);
}

#endif

void EncodeBlock(const float *x, int64_t len, float scale, uint8_t *q, const quant8::Tables &t) {
  if (!(scale > 0.0f)) {
    for (int64_t j = 0; j < len; ++j) q[j] = static_cast<uint8_t>(quant8::kZeroCode);
    return;
  }
#ifdef MS_OPTIM_AVX2
  if (len == kBlock && Quant8Simd() == Simd::kAvx512) {
    avx512::EncodeBlock(x, scale, q, t);
    return;
  }
  if (len == kBlock && Quant8Simd() == Simd::kAvx2) {
    avx2::EncodeBlock(x, scale, q, t);
    return;
  }
#endif
  for (int64_t j = 0; j < len; ++j) q[j] = quant8::Encode(t.bin, x[j] / scale);
}

template <typename P>
inline float Block8Any(int64_t begin, int64_t len, P *p, uint8_t *q, float absmax, const P *g,
                       const AdagradScalars &k, const quant8::Tables &t, const float *encode_scale, bool write) {
  if constexpr (std::is_same_v<P, float>) {
#ifdef MS_OPTIM_AVX2
    if (len == kBlock && !write && Quant8Simd() == Simd::kAvx512) {
      alignas(64) float s[kBlock];
      return avx512::Update<false>(q + begin, absmax, p + begin, g + begin, k, t.code, s);
    }
    if (len == kBlock && !write && Quant8Simd() == Simd::kAvx2) {
      alignas(32) float s[kBlock];
      return avx2::Update<false>(q + begin, absmax, p + begin, g + begin, k, t.code, s);
    }
#endif
    return Block8F32(begin, len, p, q, absmax, g, k, t, encode_scale, write);
  } else {
    return Block8(begin, len, p, q, absmax, g, k, t, encode_scale, write);
  }
}

// Blocks [b0, b1) updated and re-quantized. Block-wise (no `tensor`): block b dequantizes with absmax[b], which
// gets its new absmax. Tensor-wise: dequantize with tensor->decode, re-quantize with tensor->encode.
template <typename P>
void UpdateBlocks(int64_t n, int64_t b0, int64_t b1, P *p, uint8_t *q, float *absmax, const P *g,
                  const AdagradScalars &k, const quant8::Tables &t, const TensorScales *tensor) {
#ifdef MS_OPTIM_AVX2
  if constexpr (std::is_same_v<P, float>) {
    const int64_t whole = std::min(b1, n / kBlock);  // the last block may be partial
    if (whole > b0 && Quant8Simd() == Simd::kAvx512) {
      Blocks<avx512::Update<true>, avx512::UpdateEncode>(b0, whole, p, q, absmax, g, k, t, tensor);
      b0 = whole;
    } else if (whole > b0 && Quant8Simd() == Simd::kAvx2) {
      Blocks<avx2::Update<true>, avx2::UpdateEncode>(b0, whole, p, q, absmax, g, k, t, tensor);
      b0 = whole;
    }
  }
#endif
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t begin = b * kBlock, len = std::min(n - begin, kBlock);
    if (tensor != nullptr) {
      Block8Any(begin, len, p, q, tensor->decode, g, k, t, &tensor->encode, true);
    } else {
      absmax[b] = Block8Any(begin, len, p, q, absmax[b], g, k, t, nullptr, true);
    }
  }
}

// One 8-bit tensor of a kernel call: block-wise (one absmax per block) or tensor-wise (one absmax; the same thing
// for a tensor of one block).
struct Tensor8 {
  int64_t n, blocks;
  bool tensor_wise;
};

// For N >= 1 tensors (all the parameters of a step with 8-bit state, in one call):
//   param[N], code[N], absmax[N], grad[N], lr, gnorm_scale, weight_decay, eps -> flag (float32, 1)
// absmax[t] holds ceil(n / 256) values (block-wise) or one (tensor-wise). Every input is checked before anything is
// written. Threads take whole blocks of one tensor at a time (one parallel region for all the tensors), so results
// do not depend on their number. Tensor-wise tensors take a first pass that computes the new sums without writing,
// for their absmax (per-block maxima, then their maximum: exact in any order); the second pass updates and
// re-quantizes every tensor.
int Adagrad8Kernel(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  const AotArgs a{nparam, params, ndims, shapes, dtypes};
  const int count = ListCount(nparam, 4, 5);
  if (count < 0) return kBadArgCount;
  const int kParam = 0, kCode = count, kAbsmax = 2 * count, kGrad = 3 * count, kScalars = 4 * count,
            kOut = 4 * count + 4;
  std::vector<Tensor8> tensors(count);
  for (int t = 0; t < count; ++t) {
    const TensorChecks check{a, t, count, kParam, kGrad};
    if (int st = check.shapes(kCode, "code"); st != kOk) return st;
    if (std::strcmp(dtypes[kCode + t], "uint8") != 0) {
      return a.reject_dtype(kCode + t, TensorName("code", t, count).c_str(), "uint8");
    }
    if (a.dtype(kAbsmax + t) != DType::kF32) {
      return a.reject_dtype(kAbsmax + t, TensorName("absmax", t, count).c_str(), "float32");
    }
    if (int st = check.dtypes(); st != kOk) return st;
    const int64_t n = a.numel(kParam + t), blocks = std::max<int64_t>(1, (n + kBlock - 1) / kBlock);
    const int64_t nabs = a.numel(kAbsmax + t);
    if (nabs != blocks && nabs != 1) {
      return Reject(kBadShape, "'%s' has %lld values, expected %lld (one per block of %lld) or 1 for '%s' of "
                    "shape %s", TensorName("absmax", t, count).c_str(), static_cast<long long>(nabs),
                    static_cast<long long>(blocks), static_cast<long long>(kBlock),
                    TensorName("param", t, count).c_str(), a.shape_str(kParam + t).c_str());
    }
    tensors[t] = Tensor8{n, n == 0 ? 0 : (n + kBlock - 1) / kBlock, nabs != blocks};
  }
  ScalarInputs k;
  if (int st = ReadScalars(a, kScalars, count, &k); st != kOk) return st;
  const quant8::Tables &t8 = quant8::HostTables();
  if (!t8.ok) return Reject(kBadScalar, "the 8-bit code tables failed their self-check");
  if (int st = SetFlag(a, kOut); st != kOk) return st;  // the last check; the first write

  // Runs fn(P{}, p, q, absmax, g) for tensor t, P its parameters' storage type.
  auto with_tensor = [&](int t, auto &&fn) {
    DispatchFloat(a.dtype(kParam + t), [&](auto tag) {
      using P = decltype(tag);
      fn(tag, static_cast<P *>(params[kParam + t]), static_cast<uint8_t *>(params[kCode + t]),
         static_cast<float *>(params[kAbsmax + t]), static_cast<const P *>(params[kGrad + t]));
      return static_cast<int>(kOk);
    });
  };
  const int64_t min_blocks = std::max<int64_t>(1, kMinElementsPerThread / kBlock);
  std::vector<int64_t> blocks(count);
  std::vector<std::vector<float>> maxima(count);  // tensor-wise tensors: each block's new absmax
  bool any_tensor_wise = false;
  for (int t = 0; t < count; ++t) {
    blocks[t] = tensors[t].tensor_wise ? tensors[t].blocks : 0;
    maxima[t].resize(blocks[t]);
    any_tensor_wise = any_tensor_wise || tensors[t].tensor_wise;
  }
  if (any_tensor_wise) {
    ParallelForTensors(count, blocks.data(), [&](int t, int64_t b0, int64_t b1) {
      with_tensor(t, [&](auto, auto *p, uint8_t *q, float *absmax, const auto *g) {
        const int64_t n = tensors[t].n;
        const AdagradScalars scalars = k.of(t);
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t begin = b * kBlock;
          maxima[t][b] = Block8Any(begin, std::min(n - begin, kBlock), p, q, absmax[0], g, scalars, t8, nullptr,
                                   false);
        }
      });
    }, min_blocks, 1);
  }
  std::vector<TensorScales> scales(count);
  for (int t = 0; t < count; ++t) {
    if (!tensors[t].tensor_wise) continue;
    uint32_t amax_bits = 0;
    for (float m : maxima[t]) amax_bits = quant8::AbsBitsMax(amax_bits, m);
    // (a NaN sum makes amax NaN: every code is then kZeroCode, as in the reference path)
    scales[t] = TensorScales{static_cast<const float *>(params[kAbsmax + t])[0],
                             quant8::CanonicalNan(quant8::BitsFloat(amax_bits))};
  }
  for (int t = 0; t < count; ++t) blocks[t] = tensors[t].blocks;
  ParallelForTensors(count, blocks.data(), [&](int t, int64_t b0, int64_t b1) {
    with_tensor(t, [&](auto, auto *p, uint8_t *q, float *absmax, const auto *g) {
      UpdateBlocks(tensors[t].n, b0, b1, p, q, absmax, g, k.of(t), t8, tensors[t].tensor_wise ? &scales[t] : nullptr);
    });
  }, min_blocks, 1);
  for (int t = 0; t < count; ++t) {
    if (tensors[t].tensor_wise) static_cast<float *>(params[kAbsmax + t])[0] = scales[t].encode;
  }
  return kOk;
}

// The layout version an optimizer's 8-bit state was written under (its `quant8_layout` Parameter, saved in and
// loaded from checkpoints with the codes) must be the one this library reads: checked before anything of the step
// is written (the optimizer makes its step counter, and so every update, wait for it).
//   layout (int32, 1) -> flag
int LayoutKernel(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  const AotArgs a{nparam, params, ndims, shapes, dtypes};
  constexpr int kLayout = 0, kOut = 1;
  if (nparam != kOut + 1) return RejectArgCount(nparam, kOut + 1);
  if (a.dtype(kLayout) != DType::kI32 || a.numel(kLayout) != 1) {
    return Reject(kBadScalar, "'quant8_layout' must be an int32 tensor of one element, but has dtype %s and shape %s",
                  dtypes[kLayout], a.shape_str(kLayout).c_str());
  }
  const int32_t layout = *static_cast<const int32_t *>(params[kLayout]);
  if (layout != quant8::kLayoutVersion) {
    return Reject(kBadLayout, "the 8-bit state was written under layout version %d ('quant8_layout'), but this "
                  "ms_optim reads version %d; its codes would be read as other values (docs/adagrad.md, \"Versions "
                  "and checkpoints\")", static_cast<int>(layout), quant8::kLayoutVersion);
  }
  if (int st = SetFlag(a, kOut); st != kOk) return st;  // the last check; the first write
  return kOk;
}

}  // namespace
}  // namespace ms_optim

MS_OPTIM_EXPORT_LAST_ERROR()
MS_OPTIM_EXPORT_KERNEL(MsOptimAdagrad, Adagrad32Kernel)
MS_OPTIM_EXPORT_KERNEL(MsOptimAdagrad8bit, Adagrad8Kernel)
MS_OPTIM_EXPORT_CHECK(MsOptimQuant8Layout, LayoutKernel)

// ---- the quantizer on its own, for tests through ctypes (plain C; not MindSpore kernels)

// Copies the code table and the thresholds (256 floats each); returns the layout version, or -1 if the tables
// failed their self-check.
extern "C" __attribute__((visibility("default"))) int MsOptimQuant8Tables(float *code, float *threshold) {
  const ms_optim::quant8::Tables &t = ms_optim::quant8::HostTables();
  std::memcpy(code, t.code, sizeof(t.code));
  std::memcpy(threshold, t.threshold, sizeof(t.threshold));
  return t.ok ? ms_optim::quant8::kLayoutVersion : -1;
}

// Quantizes x[0, n): block-wise (absmax gets ceil(n / 256) values) or tensor-wise (one value).
extern "C" __attribute__((visibility("default"))) void MsOptimQuant8Quantize(const float *x, int64_t n,
                                                                             int block_wise, uint8_t *codes,
                                                                             float *absmax) {
  using namespace ms_optim::quant8;
  const Tables &t = HostTables();
  const int64_t size = block_wise ? kBlockSize : std::max<int64_t>(n, 1);
  for (int64_t b = 0; b * size < n || (n == 0 && b == 0); ++b) {
    const int64_t begin = b * size, end = std::min(n, begin + size);
    uint32_t amax_bits = 0;
    for (int64_t i = begin; i < end; ++i) amax_bits = AbsBitsMax(amax_bits, x[i]);
    const float amax = CanonicalNan(BitsFloat(amax_bits));
    for (int64_t i = begin; i < end; i += kBlockSize) {
      ms_optim::EncodeBlock(x + i, std::min<int64_t>(kBlockSize, end - i), amax, codes + i, t);
    }
    absmax[b] = amax;
  }
}
