"""Calling an AOT kernel from Python without MindSpore (numpy and ctypes only), for tests that fork or that
check the C interface itself."""
import ctypes

import numpy as np


def call(lib, symbol, arrays):
    """Calls an AOT kernel the way MindSpore does, but with extra = NULL: it returns its code."""
    n = len(arrays)
    shape_arrays = [np.array(a.shape if a.shape else [], np.int64) for a in arrays]
    ptr64 = ctypes.POINTER(ctypes.c_int64)
    fn = getattr(lib, symbol)
    fn.restype = ctypes.c_int
    return fn(n, (ctypes.c_void_p * n)(*[a.ctypes.data for a in arrays]), (ctypes.c_int * n)(*[a.ndim for a in arrays]),
              (ptr64 * n)(*[s.ctypes.data_as(ptr64) for s in shape_arrays]),
              (ctypes.c_char_p * n)(*[str(a.dtype).encode() for a in arrays]), None, None)


ADAM_GRAD = 3  # the index of the gradient in adam_arrays


def adam_arrays(n, dtype=np.float32):
    """The inputs and output of MsOptimAdam for one tensor of n elements: param, m, v, grad, the six scalars, flag."""
    scalars = [np.array([x], np.float32) for x in (0.9, 0.999, 0.01, 0.9, 0.999, 1e-8)]
    return [np.ones(n, dtype), np.zeros(n, np.float32), np.zeros(n, np.float32), np.ones(n, dtype), *scalars,
            np.zeros(1, np.float32)]
