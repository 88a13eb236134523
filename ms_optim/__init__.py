"""ms_optim: MindSpore optimizers with fused kernels.

``Adam`` is a drop-in for :class:`mindspore.nn.Adam` (lazy, offload, amsgrad, nesterov), ``Came`` for
mindformers' ``Came``, ``AdaBelief`` for labml's ``AdaBelief``, ``Adagrad`` / ``Adagrad8bit`` / ``Adagrad32bit`` for
bitsandbytes' Adagrad (float32 or block-wise 8-bit state); their update runs in one fused kernel per parameter where
the device target has one, and in plain MindSpore ops elsewhere.
"""
from ms_optim.adabelief import AdaBelief
from ms_optim.adagrad import Adagrad, Adagrad8bit, Adagrad32bit
from ms_optim.adam import Adam
from ms_optim.came import Came

__version__ = "0.1.0"
__all__ = ["AdaBelief", "Adam", "Came", "Adagrad", "Adagrad8bit", "Adagrad32bit"]
