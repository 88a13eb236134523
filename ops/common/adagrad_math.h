// Adagrad's per-element update, float32 math whatever the storage type, shared by every Adagrad kernel (32-bit
// and 8-bit state; host/device so that a CUDA build can include it). The reference path,
// ms_optim/functional/adagrad.py, spells out the same operations in the same order:
//   g = grad * gnorm_scale          (gnorm_scale: 1, or the percentile-clipping factor of this parameter)
//   g = g + weight_decay * p
//   s = s + g * g
//   p = p - lr * (g / (sqrt(s) + eps))     lr already holds the lr_decay factor of the step
// Built with -ffp-contract=off: no FMA, so every product and sum rounds as written.
#pragma once

#include <cmath>

#ifndef MS_OPTIM_HD
#if defined(__CUDACC__)
#define MS_OPTIM_HD __host__ __device__
#else
#define MS_OPTIM_HD
#endif
#endif

namespace ms_optim {

struct AdagradScalars {
  float lr, gnorm_scale, weight_decay, eps;
};

// Updates p (float32) and returns the new sum of squares for the old sum `s` and the raw gradient `grad`.
MS_OPTIM_HD inline float AdagradStep(float &p, float s, float grad, const AdagradScalars &k) {
  float g = grad * k.gnorm_scale;
  g = g + k.weight_decay * p;
  s = s + g * g;
  p = p - k.lr * (g / (std::sqrt(s) + k.eps));
  return s;
}

}  // namespace ms_optim
