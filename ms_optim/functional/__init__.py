"""Reference updates written in plain MindSpore ops: the ground truth the fused kernels are tested against,
and the path used on device targets without a fused kernel."""
