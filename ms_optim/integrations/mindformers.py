"""Make every ms_optim optimizer available to mindformers' YAML configs.

``register()`` adds each public ms_optim optimizer class ``<Name>`` to mindformers' optimizer registry under two
names, ``ms_optim.<Name>`` and ``MsOptim<Name>``, so that an ``optimizer:`` section of a mindformers YAML config can
say ``type: ms_optim.Came`` (or ``type: MsOptimCame``). Nothing is registered under a bare class name: that would
silently replace mindformers' own ``Came`` or MindSpore's ``Adam`` / ``Adagrad`` in every config that names them.

Without any launcher code, ``run_mindformer.py --register_path <REGISTER_PATH>`` and an ``auto_register:`` line in
the optimizer section do the same (see ``REGISTER_PATH`` and docs/mindformers.md).
"""
import os

#: Directory to give mindformers' ``run_mindformer.py --register_path`` (or the ``REGISTER_PATH`` environment
#: variable); it holds one module, ``ms_optim_mindformers.py``, for YAML ``auto_register:`` lines.
REGISTER_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mindformers_register")

_INSTALL_HINT = ("ms_optim.integrations.mindformers needs mindformers: pip install mindformers "
                 "(mindformers 1.8 pins mindspore==2.7.2)")


def _registry():
    try:
        from mindformers.tools.register import MindFormerModuleType, MindFormerRegister
    except ImportError as error:
        raise ImportError(f"{_INSTALL_HINT}; importing it failed with: {error}") from error
    return MindFormerRegister, MindFormerModuleType.OPTIMIZER


def optimizer_classes():
    """``{name: class}`` of every public ms_optim optimizer (the ``nn.Optimizer`` subclasses in ``ms_optim.__all__``)."""
    import ms_optim
    from mindspore import nn
    classes = {}
    for name in ms_optim.__all__:
        obj = getattr(ms_optim, name)
        if isinstance(obj, type) and issubclass(obj, nn.Optimizer):
            classes[name] = obj
    return classes


def registered_names(name):
    """The two names ``register()`` gives the class ``ms_optim.<name>``: ``("MsOptim<name>", "ms_optim.<name>")``."""
    return f"MsOptim{name}", f"ms_optim.{name}"


def register():
    """Register every public ms_optim optimizer in mindformers' registry (``MindFormerModuleType.OPTIMIZER``) as
    ``MsOptim<Name>``, with ``ms_optim.<Name>`` mapped to it. Calling it again changes nothing.

    Returns:
        dict, ``{registered name: class}`` for both names of every class.

    Raises:
        ImportError: If mindformers can not be imported; the message says what to install.
    """
    register_, optimizer = _registry()
    names = {}
    for name, cls in optimizer_classes().items():
        alias, search_name = registered_names(name)
        register_.register_cls(cls, module_type=optimizer, alias=alias, search_names=[search_name])
        names[alias] = names[search_name] = cls
    return names
