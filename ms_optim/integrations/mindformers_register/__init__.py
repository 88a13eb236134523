"""The directory to give mindformers' ``--register_path`` (``ms_optim.integrations.mindformers.REGISTER_PATH``).

It is a package only so that installs ship it; mindformers imports ``ms_optim_mindformers.py`` from it by path.
"""
