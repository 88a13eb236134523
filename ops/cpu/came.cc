// Fused CAME kernel for the CPU (mindspore.ops.Custom, func_type="aot"): the whole update of every parameter of a
// step in one call, row/column reductions included. A parameter with two or more axes (factored second moment)
// takes four passes over memory (five with scale_parameter, whose RMS(p) is one more read of p):
//   A  read g (and p):  row and column means of U = g*g + eps0 (and RMS(p) for scale_parameter)
//   B  read g:          RMS of u = g * rsqrt(R[r] / mean(R)) * rsqrt(C[c])
//   C  read g, m:       u *= 1/max(RMS(u)/clip, 1); m = beta1 m + (1-beta1) u (written);
//                       row and column means of I = (u - m)^2 + eps2
//   D  read p, m:       p = p + p*(-wd)*lr_t;  p = p - rsqrt(Ri[r] / mean(Ri)) * rsqrt(Ci[c]) * m * lr_t
// Each pass depends on a sum over the whole tensor from the one before, so four is the least; 32 B per element
// against Adam's 28. A parameter with fewer axes (full second moment V) takes three: V and u = g / sqrt(V), the
// RMS of u, then m and p. Every pass runs for all the tensors of the call in one parallel region (their row blocks
// laid end to end), where one call per tensor made four regions each and one MindSpore launch each.
// beta1 = 0 skips the confidence term (p -= m * lr_t; the instability states stay), see the reference path.
// The formula, the operation order and the meaning of every state are those of the reference path,
// ms_optim/functional/came.py. Reductions run over fixed row blocks and fixed lanes, combined in a fixed order,
// so results do not depend on the thread count nor on the other tensors of the call. Math is float32 whatever
// the storage types.
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

constexpr int kHyperSize = 8;

// The scalar inputs from `first` on: lr (1 value, or one per tensor: group learning rates), beta2t (1) and hyper
// (8 float32 values, or 8 per tensor: group weight decays), checked once per call.
int CheckCameScalars(const AotArgs &a, int first, int tensors) {
  if (int st = CheckPerTensorScalar(a, first, "lr", tensors); st != kOk) return st;
  if (!a.is_f32_scalar(first + 1)) return a.reject_scalar(first + 1, "beta2t");
  return CheckPerTensorValues(a, first + 2, "hyper", kHyperSize, tensors);
}

CameHyper CameHyperOf(const AotArgs &a, int hyper_i, int t) {
  const float *x = PerTensorValues(a, hyper_i, kHyperSize, t);
  return CameHyper{x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7] > 0.0f};
}

constexpr int64_t kRowsPerBlock = 64;  // fixed: the column partial sums, and so the results, depend on it only

// Rows of a [slices, rows, cols] view, grouped into blocks that never straddle two slices.
struct RowBlocks {
  int64_t slices, rows, cols, blocks_per_slice;
  int64_t count() const { return slices * blocks_per_slice; }
  int64_t slice(int64_t block) const { return block / blocks_per_slice; }
  int64_t first_row(int64_t block) const { return (block % blocks_per_slice) * kRowsPerBlock; }
  int64_t end_row(int64_t block) const { return std::min(rows, first_row(block) + kRowsPerBlock); }
};

// Unfactored parameters are summed in fixed blocks of this many elements, the partial sums added in order.
constexpr int64_t kFlatBlock = kRowsPerBlock * 1024;

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

// One tensor of a call: its inputs, its scalars and the per-row (per-block) results the passes hand on.
struct CameTensor {
  int64_t n = 0;
  bool factored = false;
  RowBlocks rb{};          // factored: [slices, rows, cols] in blocks of rows
  int64_t flat_blocks = 0;  // unfactored: blocks of kFlatBlock elements
  DType param_t = DType::kF32, state_t = DType::kF32;
  void *p = nullptr, *m = nullptr, *row = nullptr, *col = nullptr, *irow = nullptr, *icol = nullptr, *sq = nullptr;
  const void *g = nullptr;
  float lr = 0.0f, lr_t = 0.0f, inv_clip = 1.0f;
  CameHyper h{};
  std::vector<float> sums;       // per row (factored) or per block (unfactored) of the pass that sums
  std::vector<float> partial;    // factored: column partial sums, one row of `cols` per block
  std::vector<float> col_sums, row_factor, col_factor;
  std::vector<float> u;          // unfactored: the normalised update, between its passes
  int64_t items() const { return factored ? rb.count() : flat_blocks; }
};

// Calls fn(P{}, S{}) with the tensor's storage types (parameter and gradient; state).
template <typename Fn>
void Typed(const CameTensor &ct, Fn &&fn) {
  DispatchFloatPair(ct.param_t, ct.state_t, [&](auto param_tag, auto state_tag) {
    fn(param_tag, state_tag);
    return static_cast<int>(kOk);
  });
}

// Runs fn(tensor, item) for every item (row block, or flat block) of the tensors for which take(tensor) holds, in
// one parallel region: the items of all the tensors laid end to end. Small calls (the many small tensors of a
// model) stay on the calling thread.
template <typename Take, typename Fn>
void ForEachItem(std::vector<CameTensor> &tensors, Take &&take, Fn &&fn) {
  std::vector<std::pair<int, int64_t>> items;
  int64_t elements = 0;
  for (int t = 0; t < static_cast<int>(tensors.size()); ++t) {
    if (!take(tensors[t])) continue;
    for (int64_t k = 0; k < tensors[t].items(); ++k) items.emplace_back(t, k);
    elements += tensors[t].n;
  }
  const int64_t total = static_cast<int64_t>(items.size());
  if (total == 0) return;
  const int64_t min_items = elements >= 2 * kMinElementsPerThread ? 1 : total;
  ParallelFor(total, [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k) fn(tensors[items[k].first], items[k].second);
  }, min_items, 1);
}

// Each factored tensor's column sums: its blocks' partial sums added in block order (columns are independent).
void CombineColumns(std::vector<CameTensor> &tensors) {
  std::vector<int> factored;
  for (int t = 0; t < static_cast<int>(tensors.size()); ++t) {
    if (tensors[t].factored && tensors[t].n > 0) factored.push_back(t);
  }
  ParallelFor(static_cast<int64_t>(factored.size()), [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k) {
      CameTensor &ct = tensors[factored[k]];
      const RowBlocks &rb = ct.rb;
      ct.col_sums.assign(rb.slices * rb.cols, 0.0f);
      for (int64_t sc = 0; sc < rb.slices * rb.cols; ++sc) {
        const int64_t s = sc / rb.cols, c = sc % rb.cols;
        float total = 0.0f;
        for (int64_t blk = 0; blk < rb.blocks_per_slice; ++blk) {
          total += ct.partial[(s * rb.blocks_per_slice + blk) * rb.cols + c];
        }
        ct.col_sums[sc] = total;
      }
    }
  }, 1, 1);
}

// Runs row_fn(slice, row, offset of the row) for the rows of block `block`.
template <typename Fn>
inline void RowsOf(const RowBlocks &rb, int64_t block, Fn &&row_fn) {
  const int64_t s = rb.slice(block);
  for (int64_t r = rb.first_row(block); r < rb.end_row(block); ++r) row_fn(s, r, (s * rb.rows + r) * rb.cols);
}

// The elements [begin, end) of flat block `block` of an unfactored tensor.
inline std::pair<int64_t, int64_t> FlatRange(const CameTensor &ct, int64_t block) {
  const int64_t begin = block * kFlatBlock;
  return {begin, std::min(ct.n, begin + kFlatBlock)};
}

// Checks tensor t of the call (param, m, row, col, insta_row, insta_col, sq, grad lists start at first[0..7]).
int CheckCameTensor(const AotArgs &a, const int *first, int t, int count) {
  enum { kParam, kM, kRow, kCol, kIRow, kICol, kSq, kGrad };
  static const char *const names[] = {"param", "m", "row", "col", "insta_row", "insta_col", "sq", "grad"};
  const int i_param = first[kParam] + t;
  const std::string param = TensorName("param", t, count);
  const TensorChecks check{a, t, count, first[kParam], first[kGrad]};
  if (int st = check.shapes(first[kM], "m"); st != kOk) return st;
  const int nd = a.ndims[i_param];
  const int64_t *shape = a.shapes[i_param];
  if (nd >= 2) {
    for (int k : {kRow, kIRow}) {  // rows: param.shape[:-1]
      const int i = first[k] + t;
      if (!SameShape(a.ndims[i], a.shapes[i], nd - 1, shape)) {
        return Reject(kBadShape, "'%s' has shape %s, expected %s.shape[:-1] (%s)", TensorName(names[k], t, count).c_str(),
                      a.shape_str(i).c_str(), param.c_str(), a.shape_str(i_param).c_str());
      }
    }
    for (int k : {kCol, kICol}) {  // columns: param.shape[:-2] + param.shape[-1:]
      const int i = first[k] + t;
      if (a.ndims[i] != nd - 1 || a.shapes[i][nd - 2] != shape[nd - 1] || !SameShape(nd - 2, a.shapes[i], nd - 2, shape)) {
        return Reject(kBadShape, "'%s' has shape %s, expected %s.shape[:-2] + %s.shape[-1:] (%s)",
                      TensorName(names[k], t, count).c_str(), a.shape_str(i).c_str(), param.c_str(), param.c_str(),
                      a.shape_str(i_param).c_str());
      }
    }
  } else if (!a.same_shape(first[kSq] + t, i_param)) {
    return a.reject_shape(first[kSq] + t, TensorName("sq", t, count).c_str(), i_param, param.c_str());
  }
  const DType state_t = a.dtype(first[kM] + t);
  if (!IsStorageType(state_t)) return a.reject_dtype(first[kM] + t, TensorName("m", t, count).c_str(), kStorageTypes);
  for (int k = kRow; k <= kSq; ++k) {  // every state, used or not, in the state dtype
    if (a.dtype(first[k] + t) != state_t) {
      return a.reject_dtype(first[k] + t, TensorName(names[k], t, count).c_str(), a.dtypes[first[kM] + t]);
    }
  }
  return check.dtypes();
}

// Inputs (N tensors): param[N], m[N], row[N], col[N], insta_row[N], insta_col[N], sq[N], grad[N], lr (1 or N),
// beta2t, hyper (8 or 8 per tensor) -> flag (float32, 1). A parameter with two or more axes is factored: row
// param.shape[:-1], col param.shape[:-2] + param.shape[-1:] (insta_row, insta_col alike), sq unused; one with fewer
// keeps sq (param's shape), the four others unused (mindformers gives them shape (1,)). Every input is checked
// before anything is written.
int CameTensorsKernel(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  const AotArgs a{nparam, params, ndims, shapes, dtypes};
  constexpr int kLists = 8;
  const int count = ListCount(nparam, kLists, 4);
  if (count < 0) return kBadArgCount;
  int first[kLists];
  for (int k = 0; k < kLists; ++k) first[k] = k * count;
  const int kScalars = kLists * count, kOut = kScalars + 3;
  for (int t = 0; t < count; ++t) {
    if (int st = CheckCameTensor(a, first, t, count); st != kOk) return st;
  }
  if (int st = CheckCameScalars(a, kScalars, count); st != kOk) return st;
  if (int st = SetFlag(a, kOut); st != kOk) return st;  // the last check; the first write
  const float beta2t = a.scalar(kScalars + 1);

  std::vector<CameTensor> tensors(count);
  for (int t = 0; t < count; ++t) {
    CameTensor &ct = tensors[t];
    ct.n = a.numel(t);
    ct.factored = ndims[t] >= 2;
    ct.param_t = a.dtype(t);
    ct.state_t = a.dtype(first[1] + t);
    ct.p = params[t];
    ct.m = params[first[1] + t];
    ct.row = params[first[2] + t];
    ct.col = params[first[3] + t];
    ct.irow = params[first[4] + t];
    ct.icol = params[first[5] + t];
    ct.sq = params[first[6] + t];
    ct.g = params[first[7] + t];
    ct.lr = ct.lr_t = PerTensorScalar(a, kScalars, t);
    ct.h = CameHyperOf(a, kScalars + 2, t);
    if (ct.n == 0) continue;  // items() is 0: no pass touches it
    if (ct.factored) {
      const int64_t rows = shapes[t][ndims[t] - 2], cols = shapes[t][ndims[t] - 1];
      ct.rb = RowBlocks{ct.n / (rows * cols), rows, cols, (rows + kRowsPerBlock - 1) / kRowsPerBlock};
    } else {
      ct.flat_blocks = (ct.n + kFlatBlock - 1) / kFlatBlock;
    }
  }
  // The per-row (factored) or per-flat-block sums of a pass; with the block column partials for the passes that
  // also sum columns.
  auto reset_sums = [](CameTensor &ct) {
    ct.sums.assign(ct.factored ? ct.rb.slices * ct.rb.rows : ct.flat_blocks, 0.0f);
  };
  auto reset_row_and_column_sums = [&](CameTensor &ct) {
    reset_sums(ct);
    ct.partial.assign(ct.rb.count() * ct.rb.cols, 0.0f);
  };
  auto every = [](const CameTensor &) { return true; };
  auto factored_only = [](const CameTensor &ct) { return ct.factored; };

  // scale_parameter: lr_t = lr * max(eps1, RMS(p)); p*p summed per row (factored) or per flat block.
  auto scaled = [](const CameTensor &ct) { return ct.h.scale_parameter; };
  for (CameTensor &ct : tensors) reset_sums(ct);
  ForEachItem(tensors, scaled, [&](CameTensor &ct, int64_t k) {
    Typed(ct, [&](auto param_tag, auto) {
      using P = decltype(param_tag);
      const P *p = static_cast<const P *>(ct.p);
      if (ct.factored) {
        RowsOf(ct.rb, k, [&](int64_t s, int64_t r, int64_t off) {
          ct.sums[s * ct.rb.rows + r] = RowNormSquaredAny(p + off, ct.rb.cols);
        });
      } else {
        const auto [begin, end] = FlatRange(ct, k);
        ct.sums[k] = LaneSum(end - begin, [&](int64_t j) {
          const float pi = Load(p, begin + j);
          return pi * pi;
        });
      }
    });
  });
  for (CameTensor &ct : tensors) {
    if (ct.h.scale_parameter && ct.n > 0) {
      ct.lr_t = ct.lr * AtLeast(std::sqrt(SumInOrder(ct.sums) / static_cast<float>(ct.n)), ct.h.eps1);
    }
  }

  // A (factored): row sums and column partials of U = g*g + eps0. Unfactored: V and u = g / sqrt(V).
  for (CameTensor &ct : tensors) {
    if (ct.factored) {
      reset_row_and_column_sums(ct);
    } else {
      ct.u.resize(ct.n);
    }
  }
  ForEachItem(tensors, every, [&](CameTensor &ct, int64_t k) {
    Typed(ct, [&](auto param_tag, auto state_tag) {
      using P = decltype(param_tag);
      using S = decltype(state_tag);
      const P *g = static_cast<const P *>(ct.g);
      if (ct.factored) {
        RowsOf(ct.rb, k, [&](int64_t s, int64_t r, int64_t off) {
          ct.sums[s * ct.rb.rows + r] = RowSquaresAny(g + off, ct.rb.cols, ct.h.eps0, &ct.partial[k * ct.rb.cols]);
        });
      } else {
        S *sq = static_cast<S *>(ct.sq);
        const auto [begin, end] = FlatRange(ct, k);
        for (int64_t i = begin; i < end; ++i) {
          const float gi = Load(g, i);
          const float v = beta2t * Load(sq, i) + (1.0f - beta2t) * (gi * gi + ct.h.eps0);
          Store(sq, i, v);
          ct.u[i] = gi / std::sqrt(v);
        }
      }
    });
  });
  CombineColumns(tensors);
  for (CameTensor &ct : tensors) {  // the second-moment averages (stored) and their inverse square roots
    if (!ct.factored || ct.n == 0) continue;
    Typed(ct, [&](auto, auto state_tag) {
      using S = decltype(state_tag);
      const std::vector<float> row_avg = UpdateAverage(static_cast<S *>(ct.row), ct.sums, static_cast<float>(ct.rb.cols), beta2t);
      const std::vector<float> col_avg = UpdateAverage(static_cast<S *>(ct.col), ct.col_sums, static_cast<float>(ct.rb.rows), beta2t);
      InverseSqrtFactors(ct.rb, row_avg, col_avg, &ct.row_factor, &ct.col_factor);
    });
  }

  // B: the RMS of u, per row (factored) or per flat block.
  for (CameTensor &ct : tensors) reset_sums(ct);
  ForEachItem(tensors, every, [&](CameTensor &ct, int64_t k) {
    if (!ct.factored) {
      const auto [begin, end] = FlatRange(ct, k);
      ct.sums[k] = LaneSum(end - begin, [&](int64_t j) { return ct.u[begin + j] * ct.u[begin + j]; });
      return;
    }
    Typed(ct, [&](auto param_tag, auto) {
      using P = decltype(param_tag);
      const P *g = static_cast<const P *>(ct.g);
      RowsOf(ct.rb, k, [&](int64_t s, int64_t r, int64_t off) {
        ct.sums[s * ct.rb.rows + r] = RowUpdateSquaresAny(g + off, ct.row_factor[s * ct.rb.rows + r],
                                                          &ct.col_factor[s * ct.rb.cols], ct.rb.cols);
      });
    });
  });
  for (CameTensor &ct : tensors) {
    if (ct.n > 0) ct.inv_clip = 1.0f / AtLeast(std::sqrt(SumInOrder(ct.sums) / static_cast<float>(ct.n)) / ct.h.clip, 1.0f);
  }

  // C (factored): the first moment (written) and the row sums and column partials of the instability.
  // Unfactored: the first moment and the parameter, its last pass.
  for (CameTensor &ct : tensors) {
    if (ct.factored) reset_row_and_column_sums(ct);
  }
  ForEachItem(tensors, every, [&](CameTensor &ct, int64_t k) {
    Typed(ct, [&](auto param_tag, auto state_tag) {
      using P = decltype(param_tag);
      using S = decltype(state_tag);
      const P *g = static_cast<const P *>(ct.g);
      S *m = static_cast<S *>(ct.m);
      if (ct.factored) {
        thread_local std::vector<float> scratch;
        scratch.resize(ct.rb.cols);
        RowsOf(ct.rb, k, [&](int64_t s, int64_t r, int64_t off) {
          ct.sums[s * ct.rb.rows + r] = RowMomentAny(g + off, m + off, ct.row_factor[s * ct.rb.rows + r],
                                                     &ct.col_factor[s * ct.rb.cols], ct.inv_clip, ct.h.beta1,
                                                     ct.h.eps2, ct.rb.cols, &ct.partial[k * ct.rb.cols],
                                                     scratch.data());
        });
        return;
      }
      P *p = static_cast<P *>(ct.p);
      const float decay = -ct.h.weight_decay;
      const auto [begin, end] = FlatRange(ct, k);
      for (int64_t i = begin; i < end; ++i) {
        const float mi = ct.h.beta1 * Load(m, i) + (1.0f - ct.h.beta1) * (ct.u[i] * ct.inv_clip);
        Store(m, i, mi);
        float pi = Load(p, i);
        pi = pi + pi * decay * ct.lr_t;  // the reference applies it always: with wd = 0 it changes nothing
        Store(p, i, pi - mi * ct.lr_t);
      }
    });
  });
  CombineColumns(tensors);
  for (CameTensor &ct : tensors) {  // the instability averages (stored) and the confidence factors
    if (!ct.factored || ct.n == 0) continue;
    if (ct.h.beta1 > 0.0f) {
      Typed(ct, [&](auto, auto state_tag) {
        using S = decltype(state_tag);
        const std::vector<float> irow_avg =
            UpdateAverage(static_cast<S *>(ct.irow), ct.sums, static_cast<float>(ct.rb.cols), ct.h.beta3);
        const std::vector<float> icol_avg =
            UpdateAverage(static_cast<S *>(ct.icol), ct.col_sums, static_cast<float>(ct.rb.rows), ct.h.beta3);
        InverseSqrtFactors(ct.rb, irow_avg, icol_avg, &ct.row_factor, &ct.col_factor);
      });
    } else {  // beta1 = 0: no first moment, no confidence term (p -= m * lr_t); the instability states stay
      std::fill(ct.row_factor.begin(), ct.row_factor.end(), 1.0f);
      std::fill(ct.col_factor.begin(), ct.col_factor.end(), 1.0f);
    }
  }

  // D (factored): decoupled weight decay and the confidence-scaled step (m as stored).
  ForEachItem(tensors, factored_only, [&](CameTensor &ct, int64_t k) {
    Typed(ct, [&](auto param_tag, auto state_tag) {
      using P = decltype(param_tag);
      using S = decltype(state_tag);
      P *p = static_cast<P *>(ct.p);
      const S *m = static_cast<const S *>(ct.m);
      RowsOf(ct.rb, k, [&](int64_t s, int64_t r, int64_t off) {
        RowParamAny(p + off, m + off, ct.row_factor[s * ct.rb.rows + r], &ct.col_factor[s * ct.rb.cols],
                    -ct.h.weight_decay, ct.lr_t, ct.rb.cols);
      });
    });
  });
  return kOk;
}

}  // namespace
}  // namespace ms_optim

MS_OPTIM_EXPORT_LAST_ERROR()
MS_OPTIM_EXPORT_KERNEL(MsOptimCame, CameTensorsKernel)
