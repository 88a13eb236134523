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

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define MS_OPTIM_AVX2_ENCODE 1
#endif

namespace ms_optim {
namespace {

constexpr int64_t kBlock = quant8::kBlockSize;

int ReadScalars(const AotArgs &a, int first, AdagradScalars *k) {
  static const char *const names[] = {"lr", "gnorm_scale", "weight_decay", "eps"};
  for (int i = 0; i < 4; ++i) {
    if (!a.is_f32_scalar(first + i)) return a.reject_scalar(first + i, names[i]);
  }
  *k = AdagradScalars{a.scalar(first), a.scalar(first + 1), a.scalar(first + 2), a.scalar(first + 3)};
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

// param, accum, grad, lr, gnorm_scale, weight_decay, eps -> flag (float32, 1)
int Adagrad32Kernel(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  const AotArgs a{nparam, params, ndims, shapes, dtypes};
  constexpr int kParam = 0, kAccum = 1, kGrad = 2, kScalars = 3, kOut = 7;
  if (nparam != kOut + 1) return RejectArgCount(nparam, kOut + 1);
  if (!a.same_shape(kAccum, kParam)) return a.reject_shape(kAccum, "accum", kParam, "param");
  if (!a.same_shape(kGrad, kParam)) return a.reject_shape(kGrad, "grad", kParam, "param");
  if (a.dtype(kAccum) != DType::kF32) return a.reject_dtype(kAccum, "accum", "float32");
  if (a.dtype(kGrad) != a.dtype(kParam)) return a.reject_dtype(kGrad, "grad", dtypes[kParam]);
  AdagradScalars k;
  if (int st = ReadScalars(a, kScalars, &k); st != kOk) return st;
  const int64_t n = a.numel(kParam);
  return DispatchFloat(a.dtype(kParam), [&](auto tag) {
    using P = decltype(tag);
    *static_cast<float *>(params[kOut]) = 1.0f;
    P *p = static_cast<P *>(params[kParam]);
    float *s = static_cast<float *>(params[kAccum]);
    const P *g = static_cast<const P *>(params[kGrad]);
    ParallelFor(n, [&](int64_t b, int64_t e) {
      if constexpr (std::is_same_v<P, float>) {
        Adagrad32F32(b, e, p, s, g, k);
      } else {
        Adagrad32Range(b, e, p, s, g, k);
      }
    });
    return static_cast<int>(kOk);
  });
}

// ---- 8-bit state


#ifdef MS_OPTIM_AVX2_ENCODE
// quant8::Encode(bin, s[j] / scale) for 8 values, with AVX2: the compiler does not vectorize the table read (a
// gather) and the byte store of the scalar form, and re-quantizing is the costliest part of an 8-bit step.
__attribute__((target("avx2"))) inline __m256i Encode8Avx2(const float *s, __m256 scale, const uint32_t *bin) {
  const __m256i mask = _mm256_set1_epi32(0xFFFF);
  const __m256i bits = _mm256_castps_si256(_mm256_div_ps(_mm256_loadu_ps(s), scale));
  const __m256i entry = _mm256_i32gather_epi32(reinterpret_cast<const int *>(bin), _mm256_srli_epi32(bits, 16), 4);
  const __m256i order = _mm256_and_si256(_mm256_xor_si256(bits, _mm256_srai_epi32(bits, 31)), mask);  // BinOrder
  const __m256i above = _mm256_cmpgt_epi32(order, _mm256_and_si256(entry, mask));  // -1 where above the threshold
  return _mm256_sub_epi32(_mm256_srli_epi32(entry, 16), above);
}

// A whole block (kBlock values, a multiple of 32).
__attribute__((target("avx2"))) void EncodeBlockAvx2(const float *s, float scale, uint8_t *q, const uint32_t *bin) {
  const __m256 vscale = _mm256_set1_ps(scale);
  const __m256i lane_order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);  // undo the per-lane packing
  for (int64_t j = 0; j < kBlock; j += 32) {
    const __m256i ab = _mm256_packus_epi32(Encode8Avx2(s + j, vscale, bin), Encode8Avx2(s + j + 8, vscale, bin));
    const __m256i cd = _mm256_packus_epi32(Encode8Avx2(s + j + 16, vscale, bin), Encode8Avx2(s + j + 24, vscale, bin));
    _mm256_storeu_si256(reinterpret_cast<__m256i *>(q + j),
                        _mm256_permutevar8x32_epi32(_mm256_packus_epi16(ab, cd), lane_order));
  }
}

inline bool HasAvx2() {
  static const bool has = __builtin_cpu_supports("avx2");
  return has;
}
#endif

// q[j] = the code of x[j] / scale for j < len (kZeroCode when scale is not above 0): the one re-quantizing loop of
// the kernels and of MsOptimQuant8Quantize (so the tests of the quantizer run it too).
void EncodeBlock(const float *x, int64_t len, float scale, uint8_t *q, const quant8::Tables &t) {
  if (!(scale > 0.0f)) {
    for (int64_t j = 0; j < len; ++j) q[j] = static_cast<uint8_t>(quant8::kZeroCode);
    return;
  }
#ifdef MS_OPTIM_AVX2_ENCODE
  if (len == kBlock && HasAvx2()) {
    EncodeBlockAvx2(x, scale, q, t.bin);
    return;
  }
#endif
  for (int64_t j = 0; j < len; ++j) q[j] = quant8::Encode(t.bin, x[j] / scale);
}

// One block of up to 256 elements [begin, begin + len), in loops over a block-sized buffer that each vectorize:
// dequantize (a gather from the table), update p and s, absmax (an integer max of the bits), re-quantize
// (EncodeBlock). Returns the new absmax. With `encode_absmax` >= 0 (tensor-wise quantization) the codes use that
// absmax instead of the block's own; without `write` nothing is written (the first tensor-wise pass).
// always_inline: so that each SIMD clone of Block8F32 compiles the loops for its instruction set.
template <typename P>
__attribute__((always_inline)) inline float Block8(int64_t begin, int64_t len, P *__restrict p,
                                                   uint8_t *__restrict q, float absmax, const P *__restrict g,
                                                   const AdagradScalars &k, const quant8::Tables &t,
                                                   float encode_absmax, bool write) {
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
  const float amax = quant8::BitsFloat(amax_bits);
  if (!write) return amax;
  EncodeBlock(s, len, encode_absmax >= 0.0f ? encode_absmax : amax, qb, t);
  return amax;
}

MS_OPTIM_SIMD_CLONES float Block8F32(int64_t begin, int64_t len, float *p, uint8_t *q, float absmax, const float *g,
                                     const AdagradScalars &k, const quant8::Tables &t, float encode_absmax,
                                     bool write) {
  return Block8(begin, len, p, q, absmax, g, k, t, encode_absmax, write);
}

template <typename P>
inline float Block8Any(int64_t begin, int64_t len, P *p, uint8_t *q, float absmax, const P *g,
                       const AdagradScalars &k, const quant8::Tables &t, float encode_absmax, bool write) {
  if constexpr (std::is_same_v<P, float>) {
    return Block8F32(begin, len, p, q, absmax, g, k, t, encode_absmax, write);
  } else {
    return Block8(begin, len, p, q, absmax, g, k, t, encode_absmax, write);
  }
}

template <typename P>
void Adagrad8Blockwise(int64_t n, P *p, uint8_t *q, float *absmax, const P *g, const AdagradScalars &k,
                       const quant8::Tables &t) {
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  ParallelFor(blocks, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t begin = b * kBlock;
      absmax[b] = Block8Any(begin, std::min(n - begin, kBlock), p, q, absmax[b], g, k, t, -1.0f, true);
    }
  }, std::max<int64_t>(1, kMinElementsPerThread / kBlock), 1);
}

// One absmax for the tensor: a first pass computes the new sums without writing, for their absmax (per-block
// maxima, then their maximum: exact in any order); the second updates and re-quantizes with it.
template <typename P>
void Adagrad8Tensorwise(int64_t n, P *p, uint8_t *q, float *absmax, const P *g, const AdagradScalars &k,
                        const quant8::Tables &t) {
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  const int64_t min_blocks = std::max<int64_t>(1, kMinElementsPerThread / kBlock);
  const float old = absmax[0];
  std::vector<float> maxima(blocks);
  ParallelFor(blocks, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t begin = b * kBlock;
      maxima[b] = Block8Any(begin, std::min(n - begin, kBlock), p, q, old, g, k, t, -1.0f, false);
    }
  }, min_blocks, 1);
  uint32_t amax_bits = 0;
  for (float m : maxima) amax_bits = quant8::AbsBitsMax(amax_bits, m);
  const float amax = quant8::BitsFloat(amax_bits);
  ParallelFor(blocks, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t begin = b * kBlock;
      Block8Any(begin, std::min(n - begin, kBlock), p, q, old, g, k, t, amax, true);
    }
  }, min_blocks, 1);
  absmax[0] = amax;
}

// param, code, absmax, grad, lr, gnorm_scale, weight_decay, eps -> flag (float32, 1)
// absmax holds ceil(n / 256) values (block-wise) or one (tensor-wise; the same thing when n <= 256).
int Adagrad8Kernel(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  const AotArgs a{nparam, params, ndims, shapes, dtypes};
  constexpr int kParam = 0, kCode = 1, kAbsmax = 2, kGrad = 3, kScalars = 4, kOut = 8;
  if (nparam != kOut + 1) return RejectArgCount(nparam, kOut + 1);
  if (!a.same_shape(kCode, kParam)) return a.reject_shape(kCode, "code", kParam, "param");
  if (!a.same_shape(kGrad, kParam)) return a.reject_shape(kGrad, "grad", kParam, "param");
  if (std::strcmp(dtypes[kCode], "uint8") != 0) return a.reject_dtype(kCode, "code", "uint8");
  if (a.dtype(kAbsmax) != DType::kF32) return a.reject_dtype(kAbsmax, "absmax", "float32");
  if (a.dtype(kGrad) != a.dtype(kParam)) return a.reject_dtype(kGrad, "grad", dtypes[kParam]);
  const int64_t n = a.numel(kParam), blocks = std::max<int64_t>(1, (n + kBlock - 1) / kBlock);
  const int64_t nabs = a.numel(kAbsmax);
  if (nabs != blocks && nabs != 1) {
    return Reject(kBadShape, "'absmax' has %lld values, expected %lld (one per block of %lld) or 1 for 'param' of "
                  "shape %s", static_cast<long long>(nabs), static_cast<long long>(blocks),
                  static_cast<long long>(kBlock), a.shape_str(kParam).c_str());
  }
  AdagradScalars k;
  if (int st = ReadScalars(a, kScalars, &k); st != kOk) return st;
  const quant8::Tables &t = quant8::HostTables();
  if (!t.ok) return Reject(kBadScalar, "the 8-bit code tables failed their self-check");
  uint8_t *q = static_cast<uint8_t *>(params[kCode]);
  float *absmax = static_cast<float *>(params[kAbsmax]);
  return DispatchFloat(a.dtype(kParam), [&](auto tag) {
    using P = decltype(tag);
    *static_cast<float *>(params[kOut]) = 1.0f;
    P *p = static_cast<P *>(params[kParam]);
    const P *g = static_cast<const P *>(params[kGrad]);
    if (n == 0) return static_cast<int>(kOk);
    if (nabs == blocks) {
      Adagrad8Blockwise(n, p, q, absmax, g, k, t);
    } else {
      Adagrad8Tensorwise(n, p, q, absmax, g, k, t);
    }
    return static_cast<int>(kOk);
  });
}

}  // namespace
}  // namespace ms_optim

MS_OPTIM_EXPORT_LAST_ERROR()
MS_OPTIM_EXPORT_KERNEL(MsOptimAdagrad, Adagrad32Kernel)
MS_OPTIM_EXPORT_KERNEL(MsOptimAdagrad8bit, Adagrad8Kernel)

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
    const float amax = BitsFloat(amax_bits);
    for (int64_t i = begin; i < end; i += kBlockSize) {
      ms_optim::EncodeBlock(x + i, std::min<int64_t>(kBlockSize, end - i), amax, codes + i, t);
    }
    absmax[b] = amax;
  }
}
