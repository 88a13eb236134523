// Fused CAME kernels for the CPU (mindspore.ops.Custom, func_type="aot"): the whole update of one parameter,
// row/column reductions included, in four passes over memory for factored parameters (five with scale_parameter,
// whose RMS(p) is one more read of p):
//   A  read g (and p):  row and column means of U = g*g + eps0 (and RMS(p) for scale_parameter)
//   B  read g:          RMS of u = g * rsqrt(R[r] / mean(R)) * rsqrt(C[c])
//   C  read g, m:       u *= 1/max(RMS(u)/clip, 1); m = beta1 m + (1-beta1) u (written);
//                       row and column means of I = (u - m)^2 + eps2
//   D  read p, m:       p = p + p*(-wd)*lr_t;  p = p - rsqrt(Ri[r] / mean(Ri)) * rsqrt(Ci[c]) * m * lr_t
// beta1 = 0 skips the confidence term (p -= m * lr_t; the instability states stay), see the reference path.
// The formula, the operation order and the meaning of every state are those of the reference path,
// ms_optim/functional/came.py. Reductions run over fixed row blocks and fixed lanes, combined in a fixed order,
// so results do not depend on the thread count. Math is float32 whatever the storage types.
#include "aot_support.h"

namespace ms_optim {
namespace {

// max(x, floor) where a NaN x gives floor: a NaN gradient element stays in its element (the reference path's
// select; std::max and ops.maximum each treat NaN by argument order, differently).
inline float AtLeast(float x, float floor) { return x > floor ? x : floor; }

// The hyper-parameter tensor (float32, 8 values), as ms_optim/came.py builds it per parameter.
struct CameHyper {
  float beta1, beta3, eps0, eps1, eps2, clip, weight_decay;
  bool scale_parameter;
};

int ReadHyper(const AotArgs &a, int lr_i, int beta2t_i, int hyper_i, float *lr, float *beta2t, CameHyper *h) {
  if (!a.is_f32_scalar(lr_i)) return a.reject_scalar(lr_i, "lr");
  if (!a.is_f32_scalar(beta2t_i)) return a.reject_scalar(beta2t_i, "beta2t");
  if (a.dtype(hyper_i) != DType::kF32 || a.numel(hyper_i) != 8) {
    return Reject(kBadScalar, "'hyper' must be 8 float32 values, but has dtype %s and shape %s", a.dtypes[hyper_i],
                  a.shape_str(hyper_i).c_str());
  }
  const float *x = static_cast<const float *>(a.params[hyper_i]);
  *lr = a.scalar(lr_i);
  *beta2t = a.scalar(beta2t_i);
  *h = CameHyper{x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7] > 0.0f};
  return kOk;
}

constexpr int64_t kRowsPerBlock = 64;  // fixed: the column partial sums, and so the results, depend on it only

// Rows of a [slices, rows, cols] view, grouped into blocks that never straddle two slices.
struct RowBlocks {
  int64_t slices, rows, cols, blocks_per_slice;
  int64_t count() const { return slices * blocks_per_slice; }
  int64_t slice(int64_t block) const { return block / blocks_per_slice; }
  int64_t first_row(int64_t block) const { return (block % blocks_per_slice) * kRowsPerBlock; }
  int64_t end_row(int64_t block) const { return std::min(rows, first_row(block) + kRowsPerBlock); }
  // Runs fn(block) for every block, spread over threads.
  template <typename Fn>
  void ForEach(Fn &&fn) const {
    const int64_t per_block = std::max<int64_t>(1, kRowsPerBlock * cols);
    ParallelFor(count(), [&](int64_t b, int64_t e) { for (int64_t k = b; k < e; ++k) fn(k); },
                std::max<int64_t>(1, kMinElementsPerThread / per_block), 1);
  }
};

// Per-row sums (row_sums[slice*rows + r]) and per-column sums (col_sums[slice*cols + c]) over a
// [slices, rows, cols] tensor: row_fn(slice, row, offset of the row, col_acc) returns the row's sum and adds
// its values into col_acc, the column partial of the row's block; block partials are then added in order.
template <typename Fn>
void RowColSums(const RowBlocks &rb, std::vector<float> *row_sums, std::vector<float> *col_sums, Fn &&row_fn) {
  std::vector<float> partial(rb.count() * rb.cols, 0.0f);
  row_sums->assign(rb.slices * rb.rows, 0.0f);
  rb.ForEach([&](int64_t block) {
    const int64_t s = rb.slice(block);
    for (int64_t r = rb.first_row(block); r < rb.end_row(block); ++r) {
      (*row_sums)[s * rb.rows + r] = row_fn(s, r, (s * rb.rows + r) * rb.cols, &partial[block * rb.cols]);
    }
  });
  // Each column adds its blocks' partials in block order; columns are independent, so they are spread over threads.
  col_sums->assign(rb.slices * rb.cols, 0.0f);
  ParallelFor(rb.slices * rb.cols, [&](int64_t begin, int64_t end) {
    for (int64_t sc = begin; sc < end; ++sc) {
      const int64_t s = sc / rb.cols, c = sc % rb.cols;
      float total = 0.0f;
      for (int64_t b = 0; b < rb.blocks_per_slice; ++b) total += partial[(s * rb.blocks_per_slice + b) * rb.cols + c];
      (*col_sums)[sc] = total;
    }
  }, std::max<int64_t>(1, kMinElementsPerThread / std::max<int64_t>(1, rb.blocks_per_slice)));
}

// Runs row_fn(slice, row, offset of the row) for every row, spread over threads; per-row results stay per row.
template <typename Fn>
void ForEachRow(const RowBlocks &rb, Fn &&row_fn) {
  rb.ForEach([&](int64_t block) {
    const int64_t s = rb.slice(block);
    for (int64_t r = rb.first_row(block); r < rb.end_row(block); ++r) row_fn(s, r, (s * rb.rows + r) * rb.cols);
  });
}

// Sum over all rows of a per-row quantity, rows added in order.
inline float SumInOrder(const std::vector<float> &v) {
  float total = 0.0f;
  for (float x : v) total += x;
  return total;
}

// state = decay * state + (1 - decay) * mean, stored; returns the float32 values.
template <typename S>
std::vector<float> UpdateAverage(S *state, const std::vector<float> &sums, float count, float decay) {
  std::vector<float> out(sums.size());
  for (size_t i = 0; i < sums.size(); ++i) {
    out[i] = decay * Load(state, static_cast<int64_t>(i)) + (1.0f - decay) * (sums[i] / count);
    Store(state, static_cast<int64_t>(i), out[i]);
  }
  return out;
}

// The factored inverse square root: row_factor[s*rows + r] = rsqrt(row[r] / mean(row of slice s)),
// col_factor = rsqrt(col).
void InverseSqrtFactors(const RowBlocks &rb, const std::vector<float> &row, const std::vector<float> &col,
                        std::vector<float> *row_factor, std::vector<float> *col_factor) {
  row_factor->resize(row.size());
  for (int64_t s = 0; s < rb.slices; ++s) {
    const float *r = &row[s * rb.rows];
    const float mean = LaneSum(rb.rows, [&](int64_t i) { return r[i]; }) / static_cast<float>(rb.rows);
    for (int64_t i = 0; i < rb.rows; ++i) (*row_factor)[s * rb.rows + i] = 1.0f / std::sqrt(r[i] / mean);
  }
  col_factor->resize(col.size());
  for (size_t i = 0; i < col.size(); ++i) (*col_factor)[i] = 1.0f / std::sqrt(col[i]);
}

// ---- per-row work of the factored kernel. Each function handles one row of `cols` elements, sums it with
// LaneSum (a fixed order, so a row's sum does not depend on which thread ran it) and adds the row's values into
// the block's column partial sums. float32 storage gets SIMD clones; other types the generic code.

// U = g*g + eps0: returns the row's sum, adds U into col_acc.
template <typename P>
inline float RowSquares(const P *g, int64_t cols, float eps0, float *col_acc) {
  return LaneSum(cols, [&](int64_t c) {
    const float gi = Load(g, c);
    const float x = gi * gi + eps0;
    col_acc[c] += x;
    return x;
  });
}

// sum over the row of p*p
template <typename P>
inline float RowNormSquared(const P *p, int64_t cols) {
  return LaneSum(cols, [&](int64_t c) {
    const float pi = Load(p, c);
    return pi * pi;
  });
}

// sum over the row of u*u, u = (rf * cf[c]) * g
template <typename P>
inline float RowUpdateSquares(const P *g, float rf, const float *cf, int64_t cols) {
  return LaneSum(cols, [&](int64_t c) {
    const float u = (rf * cf[c]) * Load(g, c);
    return u * u;
  });
}

// u = (rf * cf[c]) * g * inv_clip;  m = beta1 m + (1-beta1) u (stored);  I = (u - m)^2 + eps2:
// returns the row's sum of I, adds I into col_acc. I goes through `scratch` (one row, in L1): the element-wise
// part and the sums are then two loops the compiler vectorizes, where one fused loop is not.
template <typename P, typename S>
inline float RowMoment(const P *__restrict g, S *__restrict m, float rf, const float *__restrict cf, float inv_clip,
                       float beta1, float eps2, int64_t cols, float *__restrict col_acc, float *__restrict scratch) {
  const float one_minus_beta1 = 1.0f - beta1;
  for (int64_t c = 0; c < cols; ++c) {
    const float u = (rf * cf[c]) * Load(g, c) * inv_clip;
    const float mi = beta1 * Load(m, c) + one_minus_beta1 * u;
    Store(m, c, mi);
    const float d = u - mi;
    scratch[c] = d * d + eps2;
  }
  return LaneSum(cols, [&](int64_t c) {
    col_acc[c] += scratch[c];
    return scratch[c];
  });
}

// p = p + p*(-wd)*lr_t;  p = p - (rf * cf[c]) * m * lr_t
template <typename P, typename S>
inline void RowParam(P *p, const S *m, float rf, const float *cf, float decay, float lr_t, int64_t cols) {
  for (int64_t c = 0; c < cols; ++c) {
    float pi = Load(p, c);
    pi = pi + pi * decay * lr_t;
    Store(p, c, pi - (rf * cf[c]) * Load(m, c) * lr_t);
  }
}

MS_OPTIM_SIMD_CLONES float RowSquaresF32(const float *__restrict g, int64_t cols, float eps0,
                                         float *__restrict col_acc) {
  return RowSquares(g, cols, eps0, col_acc);
}
MS_OPTIM_SIMD_CLONES float RowNormSquaredF32(const float *__restrict p, int64_t cols) {
  return RowNormSquared(p, cols);
}
MS_OPTIM_SIMD_CLONES float RowUpdateSquaresF32(const float *__restrict g, float rf, const float *__restrict cf,
                                               int64_t cols) {
  return RowUpdateSquares(g, rf, cf, cols);
}
MS_OPTIM_SIMD_CLONES float RowMomentF32(const float *__restrict g, float *__restrict m, float rf,
                                        const float *__restrict cf, float inv_clip, float beta1, float eps2,
                                        int64_t cols, float *__restrict col_acc, float *__restrict scratch) {
  return RowMoment(g, m, rf, cf, inv_clip, beta1, eps2, cols, col_acc, scratch);
}
MS_OPTIM_SIMD_CLONES void RowParamF32(float *__restrict p, const float *__restrict m, float rf,
                                      const float *__restrict cf, float decay, float lr_t, int64_t cols) {
  RowParam(p, m, rf, cf, decay, lr_t, cols);
}

// The float32 clone where both storage types are float32, else the generic template.
template <typename P>
float RowSquaresAny(const P *g, int64_t cols, float eps0, float *col_acc) {
  if constexpr (std::is_same_v<P, float>) return RowSquaresF32(g, cols, eps0, col_acc);
  else return RowSquares(g, cols, eps0, col_acc);
}
template <typename P>
float RowNormSquaredAny(const P *p, int64_t cols) {
  if constexpr (std::is_same_v<P, float>) return RowNormSquaredF32(p, cols);
  else return RowNormSquared(p, cols);
}
template <typename P>
float RowUpdateSquaresAny(const P *g, float rf, const float *cf, int64_t cols) {
  if constexpr (std::is_same_v<P, float>) return RowUpdateSquaresF32(g, rf, cf, cols);
  else return RowUpdateSquares(g, rf, cf, cols);
}
template <typename P, typename S>
float RowMomentAny(const P *g, S *m, float rf, const float *cf, float inv_clip, float beta1, float eps2,
                   int64_t cols, float *col_acc, float *scratch) {
  if constexpr (std::is_same_v<P, float> && std::is_same_v<S, float>)
    return RowMomentF32(g, m, rf, cf, inv_clip, beta1, eps2, cols, col_acc, scratch);
  else return RowMoment(g, m, rf, cf, inv_clip, beta1, eps2, cols, col_acc, scratch);
}
template <typename P, typename S>
void RowParamAny(P *p, const S *m, float rf, const float *cf, float decay, float lr_t, int64_t cols) {
  if constexpr (std::is_same_v<P, float> && std::is_same_v<S, float>) RowParamF32(p, m, rf, cf, decay, lr_t, cols);
  else RowParam(p, m, rf, cf, decay, lr_t, cols);
}

// Inputs: param, m, row, col, insta_row, insta_col, grad, lr, beta2t, hyper -> flag (float32, 1).
// row: param.shape[:-1]; col: param.shape[:-2] + param.shape[-1:]; m: param.shape.
int CameFactored(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  const AotArgs a{nparam, params, ndims, shapes, dtypes};
  constexpr int kParam = 0, kM = 1, kRow = 2, kCol = 3, kIRow = 4, kICol = 5, kGrad = 6, kLr = 7, kBeta2t = 8,
                kHyper = 9, kOut = 10;
  if (nparam != kOut + 1) return RejectArgCount(nparam, kOut + 1);
  const int nd = ndims[kParam];
  if (nd < 2) return Reject(kBadShape, "'param' must have two or more axes, but has shape %s", a.shape_str(kParam).c_str());
  if (!a.same_shape(kGrad, kParam)) return a.reject_shape(kGrad, "grad", kParam, "param");
  if (!a.same_shape(kM, kParam)) return a.reject_shape(kM, "m", kParam, "param");
  const std::pair<int, const char *> row_states[] = {{kRow, "row"}, {kIRow, "insta_row"}};
  for (const auto &[i, name] : row_states) {  // rows: param.shape[:-1]
    if (!SameShape(ndims[i], shapes[i], nd - 1, shapes[kParam])) {
      return Reject(kBadShape, "'%s' has shape %s, expected param.shape[:-1] (param: %s)", name,
                    a.shape_str(i).c_str(), a.shape_str(kParam).c_str());
    }
  }
  const std::pair<int, const char *> col_states[] = {{kCol, "col"}, {kICol, "insta_col"}};
  for (const auto &[i, name] : col_states) {  // cols: param.shape[:-2] + param.shape[-1:]
    if (ndims[i] != nd - 1 || shapes[i][nd - 2] != shapes[kParam][nd - 1] ||
        !SameShape(nd - 2, shapes[i], nd - 2, shapes[kParam])) {
      return Reject(kBadShape, "'%s' has shape %s, expected param.shape[:-2] + param.shape[-1:] (param: %s)", name,
                    a.shape_str(i).c_str(), a.shape_str(kParam).c_str());
    }
  }
  const DType param_t = a.dtype(kParam), state_t = a.dtype(kM);
  if (a.dtype(kGrad) != param_t) return a.reject_dtype(kGrad, "grad", dtypes[kParam]);
  const std::pair<int, const char *> states[] = {{kRow, "row"}, {kCol, "col"}, {kIRow, "insta_row"}, {kICol, "insta_col"}};
  for (const auto &[i, name] : states) {
    if (a.dtype(i) != state_t) return a.reject_dtype(i, name, dtypes[kM]);
  }
  float lr, beta2t;
  CameHyper h;
  if (int st = ReadHyper(a, kLr, kBeta2t, kHyper, &lr, &beta2t, &h); st != kOk) return st;
  if (int st = SetFlag(a, kOut); st != kOk) return st;  // the last check; the first write

  const int64_t rows = shapes[kParam][nd - 2], cols = shapes[kParam][nd - 1];
  const int64_t n = a.numel(kParam), slices = rows * cols > 0 ? n / (rows * cols) : 0;
  if (n == 0) return kOk;
  const RowBlocks rb{slices, rows, cols, (rows + kRowsPerBlock - 1) / kRowsPerBlock};

  return DispatchFloatPair(param_t, state_t, [&](auto param_tag, auto state_tag) {
    using P = decltype(param_tag);
    using S = decltype(state_tag);
    P *p = static_cast<P *>(params[kParam]);
    const P *g = static_cast<const P *>(params[kGrad]);
    S *m = static_cast<S *>(params[kM]);
    std::vector<float> row_sums, col_sums, row_factor, col_factor;

    // A: second-moment averages of U = g*g + eps0; RMS(p) for scale_parameter.
    RowColSums(rb, &row_sums, &col_sums, [&](int64_t, int64_t, int64_t off, float *col_acc) {
      return RowSquaresAny(g + off, cols, h.eps0, col_acc);
    });
    float lr_t = lr;
    if (h.scale_parameter) {
      std::vector<float> p_sq(slices * rows);
      ForEachRow(rb, [&](int64_t s, int64_t r, int64_t off) { p_sq[s * rows + r] = RowNormSquaredAny(p + off, cols); });
      lr_t = lr * AtLeast(std::sqrt(SumInOrder(p_sq) / static_cast<float>(n)), h.eps1);
    }
    const std::vector<float> row_avg =
        UpdateAverage(static_cast<S *>(params[kRow]), row_sums, static_cast<float>(cols), beta2t);
    const std::vector<float> col_avg =
        UpdateAverage(static_cast<S *>(params[kCol]), col_sums, static_cast<float>(rows), beta2t);
    InverseSqrtFactors(rb, row_avg, col_avg, &row_factor, &col_factor);

    // B: RMS of the normalised update u = g * rsqrt(R[r] / mean(R)) * rsqrt(C[c]).
    std::vector<float> u_sq(slices * rows);
    ForEachRow(rb, [&](int64_t s, int64_t r, int64_t off) {
      u_sq[s * rows + r] = RowUpdateSquaresAny(g + off, row_factor[s * rows + r], &col_factor[s * cols], cols);
    });
    const float inv_clip = 1.0f / AtLeast(std::sqrt(SumInOrder(u_sq) / static_cast<float>(n)) / h.clip, 1.0f);

    // C: first moment (written) and the instability averages.
    RowColSums(rb, &row_sums, &col_sums, [&](int64_t s, int64_t r, int64_t off, float *col_acc) {
      thread_local std::vector<float> scratch;
      scratch.resize(cols);
      return RowMomentAny(g + off, m + off, row_factor[s * rows + r], &col_factor[s * cols], inv_clip, h.beta1,
                          h.eps2, cols, col_acc, scratch.data());
    });
    if (h.beta1 > 0.0f) {
      const std::vector<float> irow_avg =
          UpdateAverage(static_cast<S *>(params[kIRow]), row_sums, static_cast<float>(cols), h.beta3);
      const std::vector<float> icol_avg =
          UpdateAverage(static_cast<S *>(params[kICol]), col_sums, static_cast<float>(rows), h.beta3);
      InverseSqrtFactors(rb, irow_avg, icol_avg, &row_factor, &col_factor);
    } else {  // beta1 = 0: no first moment, no confidence term (p -= m * lr_t); the instability states stay
      std::fill(row_factor.begin(), row_factor.end(), 1.0f);
      std::fill(col_factor.begin(), col_factor.end(), 1.0f);
    }

    // D: decoupled weight decay and the confidence-scaled step (m as stored).
    ForEachRow(rb, [&](int64_t s, int64_t r, int64_t off) {
      RowParamAny(p + off, m + off, row_factor[s * rows + r], &col_factor[s * cols], -h.weight_decay, lr_t, cols);
    });
    return static_cast<int>(kOk);
  });
}

// Inputs: param, m, sq, grad, lr, beta2t, hyper -> flag; parameters with fewer than two axes (full second moment).
int CameUnfactored(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  const AotArgs a{nparam, params, ndims, shapes, dtypes};
  constexpr int kParam = 0, kM = 1, kSq = 2, kGrad = 3, kLr = 4, kBeta2t = 5, kHyper = 6, kOut = 7;
  if (nparam != kOut + 1) return RejectArgCount(nparam, kOut + 1);
  if (!a.same_shape(kGrad, kParam)) return a.reject_shape(kGrad, "grad", kParam, "param");
  if (!a.same_shape(kM, kParam)) return a.reject_shape(kM, "m", kParam, "param");
  if (!a.same_shape(kSq, kParam)) return a.reject_shape(kSq, "sq", kParam, "param");
  const DType param_t = a.dtype(kParam), state_t = a.dtype(kM);
  if (a.dtype(kGrad) != param_t) return a.reject_dtype(kGrad, "grad", dtypes[kParam]);
  if (a.dtype(kSq) != state_t) return a.reject_dtype(kSq, "sq", dtypes[kM]);
  float lr, beta2t;
  CameHyper h;
  if (int st = ReadHyper(a, kLr, kBeta2t, kHyper, &lr, &beta2t, &h); st != kOk) return st;
  if (int st = SetFlag(a, kOut); st != kOk) return st;  // the last check; the first write
  const int64_t n = a.numel(kParam);
  if (n == 0) return kOk;
  // One (rows = 1) slice per block of kRowsPerBlock * 1024 elements: fixed blocks, partial sums added in order.
  constexpr int64_t kBlock = kRowsPerBlock * 1024;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  auto block_sums = [&](auto &&value) {
    std::vector<float> sums(blocks);
    ParallelFor(blocks, [&](int64_t b, int64_t e) {
      for (int64_t k = b; k < e; ++k) {
        const int64_t begin = k * kBlock, len = std::min(n, begin + kBlock) - begin;
        sums[k] = LaneSum(len, [&](int64_t j) { return value(begin + j); });
      }
    }, std::max<int64_t>(1, kMinElementsPerThread / kBlock), 1);
    return SumInOrder(sums);
  };

  return DispatchFloatPair(param_t, state_t, [&](auto param_tag, auto state_tag) {
    using P = decltype(param_tag);
    using S = decltype(state_tag);
    P *p = static_cast<P *>(params[kParam]);
    const P *g = static_cast<const P *>(params[kGrad]);
    S *m = static_cast<S *>(params[kM]), *sq = static_cast<S *>(params[kSq]);
    float lr_t = lr;
    if (h.scale_parameter) {
      const float p_sq = block_sums([&](int64_t i) {
        const float pi = Load(p, i);
        return pi * pi;
      });
      lr_t = lr * AtLeast(std::sqrt(p_sq / static_cast<float>(n)), h.eps1);
    }
    std::vector<float> u(n);
    ParallelFor(n, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const float gi = Load(g, i);
        const float v = beta2t * Load(sq, i) + (1.0f - beta2t) * (gi * gi + h.eps0);
        Store(sq, i, v);
        u[i] = gi / std::sqrt(v);
      }
    });
    const float u_sq = block_sums([&](int64_t i) { return u[i] * u[i]; });
    const float inv_clip = 1.0f / AtLeast(std::sqrt(u_sq / static_cast<float>(n)) / h.clip, 1.0f);
    const float decay = -h.weight_decay;
    ParallelFor(n, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const float mi = h.beta1 * Load(m, i) + (1.0f - h.beta1) * (u[i] * inv_clip);
        Store(m, i, mi);
        float pi = Load(p, i);
        pi = pi + pi * decay * lr_t;  // the reference applies it always: with wd = 0 it changes nothing
        Store(p, i, pi - mi * lr_t);
      }
    });
    return static_cast<int>(kOk);
  });
}

}  // namespace
}  // namespace ms_optim

MS_OPTIM_EXPORT_LAST_ERROR()
MS_OPTIM_EXPORT_KERNEL(MsOptimCameFactored, CameFactored)
MS_OPTIM_EXPORT_KERNEL(MsOptimCameUnfactored, CameUnfactored)
