"""Integrations of ms_optim with other frameworks. Each submodule imports its framework only when used, so
``import ms_optim`` never imports them."""
