// Fused Adam-family kernels for the CPU (mindspore.ops.Custom, func_type="aot"): Adam and AdaBelief.
//
// One pass over memory updates the parameter and its state in place.
// Adam:
//   lr_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t)
//   m    = m + (g - m) * (1 - beta1)             (= beta1 m + (1 - beta1) g)
//   v    = v + (g * g - v) * (1 - beta2)
//   vhat = max(vhat, v)                          (amsgrad only; the denominator then uses vhat)
//   p    = p - lr_t * m_used / (sqrt(v) + eps),  m_used = beta1 m + (1 - beta1) g with nesterov, else m
// AdaBelief (labml's formula) differs in these places only, the `kRule` template parameter below:
//   - labml's weight decay: coupled g = g + wd * p before the moments, or decoupled p = p * decay
//   - the second moment averages the belief (g - m)^2, with the new m, instead of g^2
//   - the step: adaptive  p = p - step_size * m / (sqrt(s_used + eps) * denom_scale + eps)
//               SGD       p = p - step_size * m       (rectification term intractable, degenerate_to_sgd)
//               keep      p unchanged                 (intractable, no SGD fallback; the state still updates)
//   where the per-step scalars bc1 = 1 - beta1^t, bc2 = 1 - beta2^t and the rectification term r are computed
//   once per step in float64 by the caller and arrive as float32 (see AdaBeliefScalarsOf).
// The operation order is the one MindSpore's CPU Adam kernels use and the reference path in
// ms_optim/functional/adam.py spells out; it is compiled with -ffp-contract=off so no FMA changes rounding.
// Math is float32 whatever the storage type (float32 / float16 / bfloat16) of parameter and state.
#include "aot_support.h"

namespace ms_optim {
namespace {

// Per-call scalars. Adam uses lr_t as its step size; AdaBelief also the fields after eps.
struct AdamScalars {
  float lr_t, beta1, beta2, one_minus_beta1, one_minus_beta2, eps;
  float coupled_wd = 0.0f, decay = 1.0f, denom_scale = 1.0f;  // AdaBelief: weight decay, 1/sqrt(bc2) or 1
  int rule = 0;                                               // AdaBelief: the rule of this call, BeliefRule()
};

// The rule of a call: Adam (0), or for AdaBelief the kind of step (chosen per call from the rectification term)
// and the kind of weight decay. With weight decay 0 no decay is computed: p * 1 and g + 0 * p are p and g
// (for finite p), and the loop then reads p only where it writes it, as Adam's does.
enum BeliefStep : int { kAdaptiveStep = 0, kSgdStep = 1, kKeepStep = 2 };
enum BeliefDecay : int { kNoDecay = 0, kCoupledDecay = 1, kDecoupledDecay = 2 };  // decoupled: also absolute
constexpr int kAdamRule = 0;
constexpr int BeliefRule(int step, int decay) { return 1 + 3 * step + decay; }
constexpr int StepOf(int rule) { return (rule - 1) / 3; }
constexpr int DecayOf(int rule) { return (rule - 1) % 3; }

// Adam's step size lr_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t).
inline float AdamStepSize(float lr, float beta1_power, float beta2_power) {
  return lr * std::sqrt(1.0f - beta2_power) / (1.0f - beta1_power);
}

// Inputs b1p, b2p, lr, beta1, beta2, eps start at `first`; all must be float32 scalars, but lr may also hold
// `tensors` values (one per tensor of a multi-tensor call). Checked once per call; AdamScalarsOf then gives each
// tensor's scalars.
int CheckAdamScalars(const AotArgs &a, int first, int tensors = 1) {
  static const char *const names[] = {"beta1_power", "beta2_power", "lr", "beta1", "beta2", "eps"};
  for (int i = first; i < first + 6; ++i) {
    if (i == first + 2 && tensors > 1) {
      if (int st = CheckPerTensorScalar(a, i, "lr", tensors); st != kOk) return st;
    } else if (!a.is_f32_scalar(i)) {
      return a.reject_scalar(i, names[i - first]);
    }
  }
  return kOk;
}

AdamScalars AdamScalarsOf(const AotArgs &a, int first, int t = 0) {
  AdamScalars s;
  s.beta1 = a.scalar(first + 3);
  s.beta2 = a.scalar(first + 4);
  s.eps = a.scalar(first + 5);
  s.one_minus_beta1 = 1.0f - s.beta1;
  s.one_minus_beta2 = 1.0f - s.beta2;
  s.lr_t = AdamStepSize(PerTensorScalar(a, first + 2, t), a.scalar(first), a.scalar(first + 1));
  return s;
}

// AdaBelief's scalar inputs from `first` on: lr, bc1, bc2, r (float32 scalars) and hyper, the float32 tensor
// (1 - beta1, 1 - beta2, eps, weight_decay, decay_mode, optimized_update, degenerate_to_sgd) that
// ms_optim/adabelief.py builds per parameter. bc1 = 1 - beta1^t, bc2 = 1 - beta2^t and r (the rectification
// term; 1 without rectify, 0 where it is intractable) come from the caller's float64 per-step computation.
// decay_mode: 0 coupled (g += wd p), 1 decoupled (p *= 1 - lr wd), 2 absolute (p *= 1 - wd).
constexpr int kBeliefHyperSize = 7;

// lr may hold `tensors` values and hyper `tensors` x 7 (one per tensor of a multi-tensor call). Checked once per
// call; AdaBeliefScalarsOf then gives each tensor's scalars and rule.
int CheckAdaBeliefScalars(const AotArgs &a, int first, int tensors = 1) {
  static const char *const names[] = {"lr", "bc1", "bc2", "r"};
  if (tensors > 1) {
    if (int st = CheckPerTensorScalar(a, first, "lr", tensors); st != kOk) return st;
  } else if (!a.is_f32_scalar(first)) {
    return a.reject_scalar(first, "lr");
  }
  for (int i = first + 1; i < first + 4; ++i) {
    if (!a.is_f32_scalar(i)) return a.reject_scalar(i, names[i - first]);
  }
  return CheckPerTensorValues(a, first + 4, "hyper", kBeliefHyperSize, tensors);
}

AdamScalars AdaBeliefScalarsOf(const AotArgs &a, int first, int t = 0) {
  AdamScalars s;
  const float *h = PerTensorValues(a, first + 4, kBeliefHyperSize, t);
  const float lr = PerTensorScalar(a, first, t);
  const float bc1 = a.scalar(first + 1), bc2 = a.scalar(first + 2), r = a.scalar(first + 3);
  const float wd = h[3], decay_mode = h[4];
  const bool optimized_update = h[5] != 0.0f, degenerate_to_sgd = h[6] != 0.0f;
  s.one_minus_beta1 = h[0];
  s.one_minus_beta2 = h[1];
  s.beta1 = 1.0f - h[0];
  s.beta2 = 1.0f - h[1];
  s.eps = h[2];
  s.coupled_wd = decay_mode == 0.0f ? wd : 0.0f;
  s.decay = decay_mode == 1.0f ? 1.0f - lr * wd : (decay_mode == 2.0f ? 1.0f - wd : 1.0f);
  const int decay = wd == 0.0f ? kNoDecay : (decay_mode == 0.0f ? kCoupledDecay : kDecoupledDecay);
  int step;
  if (r > 0.0f) {
    step = kAdaptiveStep;
    if (optimized_update) {
      s.lr_t = lr * std::sqrt(bc2) * r / bc1;
      s.denom_scale = 1.0f;
    } else {
      s.lr_t = lr * r / bc1;
      s.denom_scale = 1.0f / std::sqrt(bc2);
    }
  } else {
    step = degenerate_to_sgd ? kSgdStep : kKeepStep;
    s.lr_t = lr / bc1;
  }
  s.rule = BeliefRule(step, decay);
  return s;
}

// The per-element update; `delta` (offload) receives -lr_t * m_used / denom instead of p being written.
template <int kRule, bool kNesterov, bool kAmsgrad, bool kDelta, typename P, typename S, typename G>
inline void AdamRange(int64_t begin, int64_t end, P *param, S *m, S *v, S *vhat, const G *grad, P *delta,
                      const AdamScalars &s) {
  constexpr bool kBelief = kRule != kAdamRule;
  constexpr int kStep = kBelief ? StepOf(kRule) : -1, kDecay = kBelief ? DecayOf(kRule) : kNoDecay;
  static_assert(!kBelief || (!kNesterov && !kDelta), "AdaBelief has no nesterov or increment variant");
  for (int64_t i = begin; i < end; ++i) {
    float g = Load(grad, i);
    float p = 0.0f;
    if constexpr (kDecay == kCoupledDecay) {  // labml's weight decay, before the moments
      p = Load(param, i);
      g = g + s.coupled_wd * p;
    }
    float mi = Load(m, i), vi = Load(v, i);
    mi = mi + (g - mi) * s.one_minus_beta1;
    if constexpr (kBelief) {
      const float belief = g - mi;  // AdaBelief: the variance of g around the new m, not g^2
      vi = vi + (belief * belief - vi) * s.one_minus_beta2;
    } else {
      vi = vi + (g * g - vi) * s.one_minus_beta2;
    }
    Store(m, i, mi);
    Store(v, i, vi);
    float denom_v = vi;
    if constexpr (kAmsgrad) {
      const float vh = Load(vhat, i);
      denom_v = vh > vi ? vh : vi;  // max(vhat, v) as a select (vectorizes); NaN as the reference path: v's
      Store(vhat, i, denom_v);
    }
    if constexpr (kRule == kAdamRule) {
      const float m_used = kNesterov ? mi * s.beta1 + s.one_minus_beta1 * g : mi;
      const float step = s.lr_t * m_used / (std::sqrt(denom_v) + s.eps);
      if constexpr (kDelta) {
        Store(delta, i, -step);
      } else {
        Store(param, i, Load(param, i) - step);
      }
    } else {
      if constexpr (kDecay == kDecoupledDecay) {
        p = Load(param, i) * s.decay;
      } else if constexpr (kDecay == kNoDecay) {
        p = Load(param, i);
      }
      if constexpr (kStep == kAdaptiveStep) {  // eps inside the root (never stored in s) and outside
        Store(param, i, p - s.lr_t * mi / (std::sqrt(denom_v + s.eps) * s.denom_scale + s.eps));
      } else if constexpr (kStep == kSgdStep) {
        Store(param, i, p - s.lr_t * mi);
      } else if constexpr (kDecay == kDecoupledDecay) {  // keep: only the decay changes p
        Store(param, i, p);
      }
    }
  }
}

// float32 is the hot case: give it SIMD clones (AVX-512 / AVX2 / baseline), chosen at load time.
#define MS_OPTIM_ADAM_F32(NAME, RULE, NESTEROV, AMSGRAD, DELTA)                                             \
  MS_OPTIM_SIMD_CLONES void NAME(int64_t b, int64_t e, float *__restrict p, float *__restrict m,               \
                                 float *__restrict v, float *__restrict vh, const float *__restrict g,         \
                                 float *__restrict d, const AdamScalars &s) {                                  \
    AdamRange<RULE, NESTEROV, AMSGRAD, DELTA>(b, e, p, m, v, vh, g, d, s);                                     \
  }
MS_OPTIM_ADAM_F32(AdamF32, kAdamRule, false, false, false)
MS_OPTIM_ADAM_F32(AdamNesterovF32, kAdamRule, true, false, false)
MS_OPTIM_ADAM_F32(AdamAmsgradF32, kAdamRule, false, true, false)
MS_OPTIM_ADAM_F32(AdamDeltaF32, kAdamRule, false, false, true)
MS_OPTIM_ADAM_F32(AdamNesterovDeltaF32, kAdamRule, true, false, true)
// AdaBelief's adaptive step (every step after the first few); its SGD and keep steps use the plain loop below.
MS_OPTIM_ADAM_F32(BeliefF32, BeliefRule(kAdaptiveStep, kNoDecay), false, false, false)
MS_OPTIM_ADAM_F32(BeliefAmsgradF32, BeliefRule(kAdaptiveStep, kNoDecay), false, true, false)
MS_OPTIM_ADAM_F32(BeliefCoupledF32, BeliefRule(kAdaptiveStep, kCoupledDecay), false, false, false)
MS_OPTIM_ADAM_F32(BeliefCoupledAmsgradF32, BeliefRule(kAdaptiveStep, kCoupledDecay), false, true, false)
MS_OPTIM_ADAM_F32(BeliefDecoupledF32, BeliefRule(kAdaptiveStep, kDecoupledDecay), false, false, false)
MS_OPTIM_ADAM_F32(BeliefDecoupledAmsgradF32, BeliefRule(kAdaptiveStep, kDecoupledDecay), false, true, false)
#undef MS_OPTIM_ADAM_F32

template <int kRule, bool kNesterov, bool kAmsgrad, bool kDelta>
void AdamF32Range(int64_t b, int64_t e, float *p, float *m, float *v, float *vh, const float *g, float *d,
                  const AdamScalars &s) {
  if constexpr (kRule != kAdamRule && StepOf(kRule) != kAdaptiveStep) {
    AdamRange<kRule, kNesterov, kAmsgrad, kDelta>(b, e, p, m, v, vh, g, d, s);
  } else if constexpr (kRule == BeliefRule(kAdaptiveStep, kNoDecay)) {
    kAmsgrad ? BeliefAmsgradF32(b, e, p, m, v, vh, g, d, s) : BeliefF32(b, e, p, m, v, vh, g, d, s);
  } else if constexpr (kRule == BeliefRule(kAdaptiveStep, kCoupledDecay)) {
    kAmsgrad ? BeliefCoupledAmsgradF32(b, e, p, m, v, vh, g, d, s) : BeliefCoupledF32(b, e, p, m, v, vh, g, d, s);
  } else if constexpr (kRule == BeliefRule(kAdaptiveStep, kDecoupledDecay)) {
    kAmsgrad ? BeliefDecoupledAmsgradF32(b, e, p, m, v, vh, g, d, s)
             : BeliefDecoupledF32(b, e, p, m, v, vh, g, d, s);
  } else if constexpr (kAmsgrad) {
    AdamAmsgradF32(b, e, p, m, v, vh, g, d, s);
  } else if constexpr (kDelta) {
    kNesterov ? AdamNesterovDeltaF32(b, e, p, m, v, vh, g, d, s) : AdamDeltaF32(b, e, p, m, v, vh, g, d, s);
  } else {
    kNesterov ? AdamNesterovF32(b, e, p, m, v, vh, g, d, s) : AdamF32(b, e, p, m, v, vh, g, d, s);
  }
}

// Calls fn(std::integral_constant<int, rule>) for the rule of this call: always kAdamRule for Adam (one
// instantiation); AdaBelief's rule (step and weight-decay kind) is chosen per call, once, from its scalars.
template <int kFirst, int kLast, typename Fn>
int WithRuleIn(int rule, Fn &&fn) {
  if constexpr (kFirst == kLast) {
    return fn(std::integral_constant<int, kLast>{});
  } else {
    return rule == kFirst ? fn(std::integral_constant<int, kFirst>{}) : WithRuleIn<kFirst + 1, kLast>(rule, fn);
  }
}

template <bool kBelief, typename Fn>
int WithRule(int rule, Fn &&fn) {
  if constexpr (kBelief) {
    return WithRuleIn<BeliefRule(0, 0), BeliefRule(kKeepStep, kDecoupledDecay)>(rule, fn);
  } else {
    return fn(std::integral_constant<int, kAdamRule>{});
  }
}

// Adam's increment for the offloaded update on accelerator targets, for N >= 1 tensors in one call (the state
// stays on the host; each output is its tensor's increment, which the device adds to its parameter):
//   m[N], v[N], grad[N], beta1_power, beta2_power, lr (1 or N values), beta1, beta2, eps -> delta[N]
// delta[t] has grad[t]'s shape and dtype; every input and output is checked before anything is written.
template <bool kNesterov>
int AdamDeltaKernel(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  const AotArgs a{nparam, params, ndims, shapes, dtypes};
  constexpr int kScalarInputs = 6;
  const int count = ListCount(nparam, 4, kScalarInputs);
  if (count < 0) return kBadArgCount;
  const int kM = 0, kV = count, kGrad = 2 * count, kScalars = 3 * count, kOut = kScalars + kScalarInputs;
  std::vector<int64_t> sizes(count);
  for (int t = 0; t < count; ++t) {
    const std::string grad = TensorName("grad", t, count);
    if (!a.same_shape(kM + t, kGrad + t)) return a.reject_shape(kM + t, TensorName("m", t, count).c_str(), kGrad + t, grad.c_str());
    if (!a.same_shape(kV + t, kGrad + t)) return a.reject_shape(kV + t, TensorName("v", t, count).c_str(), kGrad + t, grad.c_str());
    if (!a.same_shape(kOut + t, kGrad + t)) {
      return a.reject_shape(kOut + t, TensorName("delta", t, count).c_str(), kGrad + t, grad.c_str());
    }
    const DType grad_t = a.dtype(kGrad + t), state_t = a.dtype(kM + t);
    if (!IsStorageType(grad_t)) return a.reject_dtype(kGrad + t, grad.c_str(), kStorageTypes);
    if (!IsStorageType(state_t)) return a.reject_dtype(kM + t, TensorName("m", t, count).c_str(), kStorageTypes);
    if (a.dtype(kV + t) != state_t) return a.reject_dtype(kV + t, TensorName("v", t, count).c_str(), dtypes[kM + t]);
    if (a.dtype(kOut + t) != grad_t) {
      return a.reject_dtype(kOut + t, TensorName("delta", t, count).c_str(), dtypes[kGrad + t]);
    }
    sizes[t] = a.numel(kGrad + t);
  }
  if (int st = CheckAdamScalars(a, kScalars, count); st != kOk) return st;
  std::vector<AdamScalars> scalars(count);
  for (int t = 0; t < count; ++t) scalars[t] = AdamScalarsOf(a, kScalars, t);
  ParallelForTensors(count, sizes.data(), [&](int t, int64_t b, int64_t e) {
    DispatchFloatPair(a.dtype(kGrad + t), a.dtype(kM + t), [&](auto grad_tag, auto state_tag) {
      using P = decltype(grad_tag);
      using S = decltype(state_tag);
      if constexpr (std::is_same_v<P, float> && std::is_same_v<S, float>) {
        AdamF32Range<kAdamRule, kNesterov, false, true>(
            b, e, nullptr, static_cast<float *>(params[kM + t]), static_cast<float *>(params[kV + t]), nullptr,
            static_cast<const float *>(params[kGrad + t]), static_cast<float *>(params[kOut + t]), scalars[t]);
      } else {
        AdamRange<kAdamRule, kNesterov, false, true>(
            b, e, static_cast<P *>(nullptr), static_cast<S *>(params[kM + t]), static_cast<S *>(params[kV + t]),
            static_cast<S *>(nullptr), static_cast<const P *>(params[kGrad + t]), static_cast<P *>(params[kOut + t]),
            scalars[t]);
      }
      return static_cast<int>(kOk);
    });
  });
  return kOk;
}

// Adam and AdaBelief in place for N >= 1 tensors (all the parameters of a step, in one call):
//   Adam     : param[N], m[N], v[N], [vhat[N]], grad[N], beta1_power, beta2_power, lr, beta1, beta2, eps -> flag
//   AdaBelief: param[N], m[N], s[N], [s_max[N]], grad[N], lr, bc1, bc2, r, hyper -> flag (float32, 1)
// lr: 1 value (every tensor) or N (one per tensor: group learning rates); hyper: 7 values or 7 per tensor (each
// parameter's weight decay). Each tensor's scalars (and AdaBelief's rule) are computed as for a call of that one
// tensor, so one call gives the bits of N single calls. Per tensor, m, v (and vhat) share one storage type and
// param and grad another; every input is checked before anything is written.
template <bool kBelief, bool kNesterov, bool kAmsgrad>
int AdamTensorsKernel(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  const AotArgs a{nparam, params, ndims, shapes, dtypes};
  constexpr int kLists = kAmsgrad ? 5 : 4, kScalarInputs = kBelief ? 5 : 6;
  const int count = ListCount(nparam, kLists, kScalarInputs + 1);
  if (count < 0) return kBadArgCount;
  const int kParam = 0, kM = count, kV = 2 * count, kVhat = 3 * count, kGrad = (kLists - 1) * count;
  const int kScalars = kLists * count, kOut = kScalars + kScalarInputs;
  std::vector<int64_t> sizes(count);
  for (int t = 0; t < count; ++t) {
    const TensorChecks check{a, t, count, kParam, kGrad};
    if (int st = check.shapes(kM, "m"); st != kOk) return st;
    if (int st = check.shapes(kV, "v"); st != kOk) return st;
    if (int st = kAmsgrad ? check.shapes(kVhat, "vhat") : kOk; st != kOk) return st;
    const DType state_t = a.dtype(kM + t);
    if (!IsStorageType(state_t)) return a.reject_dtype(kM + t, TensorName("m", t, count).c_str(), kStorageTypes);
    if (a.dtype(kV + t) != state_t) {
      return a.reject_dtype(kV + t, TensorName("v", t, count).c_str(), dtypes[kM + t]);
    }
    if (kAmsgrad && a.dtype(kVhat + t) != state_t) {
      return a.reject_dtype(kVhat + t, TensorName("vhat", t, count).c_str(), dtypes[kM + t]);
    }
    if (int st = check.dtypes(); st != kOk) return st;
    sizes[t] = a.numel(kParam + t);
  }
  if (int st = kBelief ? CheckAdaBeliefScalars(a, kScalars, count) : CheckAdamScalars(a, kScalars, count);
      st != kOk) {
    return st;
  }
  std::vector<AdamScalars> scalars(count);
  for (int t = 0; t < count; ++t) {
    scalars[t] = kBelief ? AdaBeliefScalarsOf(a, kScalars, t) : AdamScalarsOf(a, kScalars, t);
  }
  if (int st = SetFlag(a, kOut); st != kOk) return st;  // the last check; the first write
  ParallelForTensors(count, sizes.data(), [&](int t, int64_t b, int64_t e) {
    const AdamScalars &s = scalars[t];
    void *vhat = kAmsgrad ? params[kVhat + t] : nullptr;
    DispatchFloatPair(a.dtype(kParam + t), a.dtype(kM + t), [&](auto param_tag, auto state_tag) {
      using P = decltype(param_tag);
      using S = decltype(state_tag);
      return WithRule<kBelief>(s.rule, [&](auto rule_tag) {
        constexpr int kRule = decltype(rule_tag)::value;
        if constexpr (std::is_same_v<P, float> && std::is_same_v<S, float>) {
          AdamF32Range<kRule, kNesterov, kAmsgrad, false>(
              b, e, static_cast<float *>(params[kParam + t]), static_cast<float *>(params[kM + t]),
              static_cast<float *>(params[kV + t]), static_cast<float *>(vhat),
              static_cast<const float *>(params[kGrad + t]), nullptr, s);
        } else {
          AdamRange<kRule, kNesterov, kAmsgrad, false>(
              b, e, static_cast<P *>(params[kParam + t]), static_cast<S *>(params[kM + t]),
              static_cast<S *>(params[kV + t]), static_cast<S *>(vhat), static_cast<const P *>(params[kGrad + t]),
              static_cast<P *>(nullptr), s);
        }
        return static_cast<int>(kOk);
      });
    });
  });
  return kOk;
}

// Element k of an int32 (`i32`) or int64 index tensor.
inline int64_t IndexAt(const void *indices, bool i32, int64_t k) {
  return i32 ? static_cast<const int32_t *>(indices)[k] : static_cast<const int64_t *>(indices)[k];
}

// `indices_i` is a 1-D int32 or int64 tensor of rows of `param_i` (at least 1-D), every one inside it.
int CheckRowIndices(const AotArgs &a, int param_i, int indices_i) {
  if (a.ndims[param_i] < 1) return Reject(kBadShape, "'param' must have at least one axis, but has shape []");
  if (a.ndims[indices_i] != 1) {
    return Reject(kBadShape, "'indices' must be 1-D, but has shape %s", a.shape_str(indices_i).c_str());
  }
  const DType index_t = a.dtype(indices_i);
  if (index_t != DType::kI32 && index_t != DType::kI64) return a.reject_dtype(indices_i, "indices", "int32 or int64");
  const int64_t rows = a.shapes[param_i][0], nnz = a.shapes[indices_i][0];
  for (int64_t k = 0; k < nnz; ++k) {
    const int64_t row = IndexAt(a.params[indices_i], index_t == DType::kI32, k);
    if (row < 0 || row >= rows) {
      return Reject(kBadIndex, "'indices'[%lld] is %lld, outside the %lld rows of 'param'", static_cast<long long>(k),
                    static_cast<long long>(row), static_cast<long long>(rows));
    }
  }
  return kOk;
}

// The indices of a sparse gradient against the rows of its parameter, checked for every sparse gradient of a step
// before anything of the step is written (the optimizer makes its writes wait for these checks): an index outside
// would otherwise stop the step part-way, in the lazy kernel, after earlier parameters had been updated.
//   param, indices -> flag
int CheckRowsKernel(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  const AotArgs a{nparam, params, ndims, shapes, dtypes};
  constexpr int kParam = 0, kIndices = 1, kOut = 2;
  if (nparam != kOut + 1) return RejectArgCount(nparam, kOut + 1);
  if (int st = CheckRowIndices(a, kParam, kIndices); st != kOk) return st;
  if (int st = SetFlag(a, kOut); st != kOk) return st;  // the last check; the first write
  return kOk;
}

// Lazy Adam for a sparse gradient (values, indices): only the rows named by indices change, in param, m and v.
//   param, m, v, beta1_power, beta2_power, lr, beta1, beta2, eps, values, indices -> flag
// Duplicate indices are summed first (in the order they appear), as the gradient of a row looked up twice is the
// sum; nn.Adam's lazy CPU kernel instead applies one step per occurrence (docs/adam.md).
template <bool kNesterov>
int LazyAdamKernel(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  const AotArgs a{nparam, params, ndims, shapes, dtypes};
  constexpr int kParam = 0, kM = 1, kV = 2, kScalars = 3, kValues = 9, kIndices = 10, kOut = 11;
  if (nparam != kOut + 1) return RejectArgCount(nparam, kOut + 1);
  if (ndims[kParam] < 1) return Reject(kBadShape, "'param' must have at least one axis, but has shape []");
  if (!a.same_shape(kM, kParam)) return a.reject_shape(kM, "m", kParam, "param");
  if (!a.same_shape(kV, kParam)) return a.reject_shape(kV, "v", kParam, "param");
  if (ndims[kIndices] != 1) return Reject(kBadShape, "'indices' must be 1-D, but has shape %s", a.shape_str(kIndices).c_str());
  bool rows_match = ndims[kValues] == ndims[kParam] && shapes[kValues][0] == shapes[kIndices][0];
  for (int d = 1; rows_match && d < ndims[kParam]; ++d) rows_match = shapes[kValues][d] == shapes[kParam][d];
  if (!rows_match) {
    return Reject(kBadShape, "'values' has shape %s, expected one row of 'param' (shape %s) per index (%lld)",
                  a.shape_str(kValues).c_str(), a.shape_str(kParam).c_str(),
                  static_cast<long long>(ndims[kIndices] == 1 ? shapes[kIndices][0] : -1));
  }
  const DType param_t = a.dtype(kParam), state_t = a.dtype(kM);
  if (a.dtype(kValues) != param_t) return a.reject_dtype(kValues, "values", dtypes[kParam]);
  if (a.dtype(kV) != state_t) return a.reject_dtype(kV, "v", dtypes[kM]);
  if (int st = CheckRowIndices(a, kParam, kIndices); st != kOk) return st;
  if (int st = CheckAdamScalars(a, kScalars); st != kOk) return st;
  const AdamScalars s = AdamScalarsOf(a, kScalars);
  if (int st = SetFlag(a, kOut); st != kOk) return st;  // the last check; the first write

  const int64_t rows = shapes[kParam][0], nnz = shapes[kIndices][0];
  const int64_t row_size = rows > 0 ? a.numel(kParam) / rows : 0;
  // (row, position) pairs sorted by row; a stable sort keeps duplicates in the order they appear.
  std::vector<std::pair<int64_t, int64_t>> order(nnz);
  const bool i32 = a.dtype(kIndices) == DType::kI32;
  for (int64_t k = 0; k < nnz; ++k) order[k] = {IndexAt(params[kIndices], i32, k), k};  // checked above
  std::stable_sort(order.begin(), order.end(),
                   [](const auto &x, const auto &y) { return x.first < y.first; });
  std::vector<int64_t> run_starts;  // start of each run of equal rows in `order`
  for (int64_t k = 0; k < nnz; ++k) {
    if (k == 0 || order[k].first != order[k - 1].first) run_starts.push_back(k);
  }
  run_starts.push_back(nnz);
  const int64_t unique_rows = static_cast<int64_t>(run_starts.size()) - 1;
  if (unique_rows == 0 || row_size == 0) return kOk;

  return DispatchFloatPair(param_t, state_t, [&](auto param_tag, auto state_tag) {
    using P = decltype(param_tag);
    using S = decltype(state_tag);
    P *param = static_cast<P *>(params[kParam]);
    S *m = static_cast<S *>(params[kM]), *v = static_cast<S *>(params[kV]);
    const P *values = static_cast<const P *>(params[kValues]);
    ParallelFor(unique_rows * row_size, [&](int64_t b, int64_t e) {
      std::vector<float> grad_row(row_size);
      for (int64_t u = b / row_size; u * row_size < e; ++u) {
        const int64_t row = order[run_starts[u]].first;
        const int64_t col_begin = std::max(b - u * row_size, int64_t{0});
        const int64_t col_end = std::min(e - u * row_size, row_size);
        for (int64_t c = col_begin; c < col_end; ++c) {
          float g = 0.0f;
          for (int64_t k = run_starts[u]; k < run_starts[u + 1]; ++k) g += Load(values, order[k].second * row_size + c);
          grad_row[c] = g;
        }
        const int64_t off = row * row_size;
        AdamRange<kAdamRule, kNesterov, false, false>(col_begin, col_end, param + off, m + off, v + off,
                                           static_cast<S *>(nullptr), grad_row.data(), static_cast<P *>(nullptr), s);
      }
    });
    return static_cast<int>(kOk);
  });
}

}  // namespace
}  // namespace ms_optim

MS_OPTIM_EXPORT_LAST_ERROR()
MS_OPTIM_EXPORT_KERNEL(MsOptimAdam, AdamTensorsKernel<false, false, false>)
MS_OPTIM_EXPORT_KERNEL(MsOptimAdamNesterov, AdamTensorsKernel<false, true, false>)
MS_OPTIM_EXPORT_KERNEL(MsOptimAdamAmsgrad, AdamTensorsKernel<false, false, true>)
MS_OPTIM_EXPORT_KERNEL(MsOptimAdamDelta, AdamDeltaKernel<false>)
MS_OPTIM_EXPORT_KERNEL(MsOptimAdamNesterovDelta, AdamDeltaKernel<true>)
MS_OPTIM_EXPORT_KERNEL(MsOptimLazyAdam, LazyAdamKernel<false>)
MS_OPTIM_EXPORT_KERNEL(MsOptimLazyAdamNesterov, LazyAdamKernel<true>)
MS_OPTIM_EXPORT_CHECK(MsOptimCheckRows, CheckRowsKernel)
MS_OPTIM_EXPORT_KERNEL(MsOptimAdaBelief, AdamTensorsKernel<true, false, false>)
MS_OPTIM_EXPORT_KERNEL(MsOptimAdaBeliefAmsgrad, AdamTensorsKernel<true, false, true>)
