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

namespace ms_optim {
namespace {

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

constexpr int64_t kBlock = quant8::kBlockSize;

// Elements [begin, end) of one block: updates p, leaves the new (float32) sums in s[0, end - begin) and returns
// their absmax. `absmax` is the block's old absmax.
template <typename P>
inline float Update8(int64_t begin, int64_t end, P *p, const uint8_t *q, float absmax, const P *g,
                     const AdagradScalars &k, const float *code, float *s) {
  float amax = 0.0f;
  for (int64_t i = begin; i < end; ++i) {
    float pi = Load(p, i);
    const float si = AdagradStep(pi, quant8::Decode(code, q[i], absmax), Load(g, i), k);
    Store(p, i, pi);
    s[i - begin] = si;
    const float mag = std::fabs(si);
    amax = amax < mag ? mag : amax;
  }
  return amax;
}

// The new sums of [begin, end) without writing anything (first pass of tensor-wise quantization): their absmax.
template <typename P>
inline float Absmax8(int64_t begin, int64_t end, const P *p, const uint8_t *q, float absmax, const P *g,
                     const AdagradScalars &k, const float *code) {
  float amax = 0.0f;
  for (int64_t i = begin; i < end; ++i) {
    float pi = Load(p, i);
    const float mag = std::fabs(AdagradStep(pi, quant8::Decode(code, q[i], absmax), Load(g, i), k));
    amax = amax < mag ? mag : amax;
  }
  return amax;
}

inline void Encode8(int64_t len, const float *s, float absmax, uint8_t *q, const quant8::Tables &t) {
  for (int64_t j = 0; j < len; ++j) q[j] = quant8::Encode(t.threshold, t.bin_start, quant8::Scaled(s[j], absmax));
}

MS_OPTIM_SIMD_CLONES float Update8F32(int64_t begin, int64_t end, float *__restrict p, const uint8_t *__restrict q,
                                      float absmax, const float *__restrict g, const AdagradScalars &k,
                                      const float *__restrict code, float *__restrict s) {
  return Update8(begin, end, p, q, absmax, g, k, code, s);
}

MS_OPTIM_SIMD_CLONES void Encode8F32(int64_t len, const float *__restrict s, float absmax, uint8_t *__restrict q,
                                     const quant8::Tables &t) {
  Encode8(len, s, absmax, q, t);
}

template <typename P>
void Adagrad8Blockwise(int64_t n, P *p, uint8_t *q, float *absmax, const P *g, const AdagradScalars &k,
                       const quant8::Tables &t) {
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  ParallelFor(blocks, [&](int64_t b0, int64_t b1) {
    float s[kBlock];
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t begin = b * kBlock, end = std::min(n, begin + kBlock);
      float amax;
      if constexpr (std::is_same_v<P, float>) {
        amax = Update8F32(begin, end, p, q, absmax[b], g, k, t.code, s);
        Encode8F32(end - begin, s, amax, q + begin, t);
      } else {
        amax = Update8(begin, end, p, q, absmax[b], g, k, t.code, s);
        Encode8(end - begin, s, amax, q + begin, t);
      }
      absmax[b] = amax;
    }
  }, std::max<int64_t>(1, kMinElementsPerThread / kBlock), 1);
}

template <typename P>
void Adagrad8Tensorwise(int64_t n, P *p, uint8_t *q, float *absmax, const P *g, const AdagradScalars &k,
                        const quant8::Tables &t) {
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  const int64_t min_blocks = std::max<int64_t>(1, kMinElementsPerThread / kBlock);
  const float old = absmax[0];
  std::vector<float> maxima(blocks);
  ParallelFor(blocks, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      maxima[b] = Absmax8(b * kBlock, std::min(n, (b + 1) * kBlock), p, q, old, g, k, t.code);
    }
  }, min_blocks, 1);
  float amax = 0.0f;
  for (float m : maxima) amax = amax < m ? m : amax;
  ParallelFor(blocks, [&](int64_t b0, int64_t b1) {
    float s[kBlock];
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t begin = b * kBlock, end = std::min(n, begin + kBlock);
      Update8(begin, end, p, q, old, g, k, t.code, s);
      Encode8(end - begin, s, amax, q + begin, t);
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
    float amax = 0.0f;
    for (int64_t i = begin; i < end; ++i) amax = amax < std::fabs(x[i]) ? std::fabs(x[i]) : amax;
    for (int64_t i = begin; i < end; ++i) codes[i] = Encode(t.threshold, t.bin_start, Scaled(x[i], amax));
    absmax[b] = amax;
  }
}
