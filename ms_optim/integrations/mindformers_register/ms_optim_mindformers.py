"""For mindformers' YAML-only route (no launcher code): ``run_mindformer.py --register_path <dir of this file>``
(``ms_optim.integrations.mindformers.REGISTER_PATH``) and, in the optimizer section::

    optimizer:
      auto_register: ms_optim_mindformers.MsOptimCame
      type: MsOptimCame          # or ms_optim.Came

mindformers imports this file and registers the named class under its ``__name__``; importing it registers every
ms_optim optimizer as ``register()`` does. The classes named here are subclasses, ``MsOptim<Name>`` of
``ms_optim.<Name>``, so that this registration uses the ``MsOptim`` name too (a re-export of ``ms_optim.Came``
would be registered as ``Came`` and replace mindformers' own class).
"""
import ms_optim.integrations.mindformers as _msf

_msf.register()

for _name, _cls in _msf.optimizer_classes().items():
    _alias = _msf.registered_names(_name)[0]
    globals()[_alias] = type(_alias, (_cls,), {"__doc__": f"``ms_optim.{_name}``, registered as ``{_alias}``.",
                                               "__module__": __name__})
