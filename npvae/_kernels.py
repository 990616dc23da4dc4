"""The compute kernels, ``npvae.kernels``, for the modules that call them.

Installed, setup.cfg maps the top-level ``kernels/`` folder to the package
``npvae.kernels``; in a source checkout this module loads that folder under the same
name. Layers, losses and optimisers import :data:`kernels` from here, so they need
nothing from the package's facade (``npvae/__init__.py``).
"""
import importlib
import importlib.util
import os
import sys

PACKAGE = __name__.rpartition(".")[0]     # "npvae"


def _load():
    """The compute kernels: the package ``npvae.kernels`` once installed (setup.cfg maps
    the top-level ``kernels/`` folder to that name); in a source checkout, that folder
    beside ``npvae/``, loaded under the same name."""
    try:
        return importlib.import_module(PACKAGE + ".kernels")
    except ModuleNotFoundError as exc:
        if exc.name != PACKAGE + ".kernels":
            raise
    folder = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "kernels")
    spec = importlib.util.spec_from_file_location(PACKAGE + ".kernels", os.path.join(folder, "__init__.py"),
                                                  submodule_search_locations=[folder])
    if spec is None:
        raise ImportError(f"npvae's kernels are missing: neither the package npvae.kernels nor {folder} exists; "
                          "reinstall npvae (pip install .)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


kernels = _load()

__all__ = ["kernels"]
