"""The package version (also in setup.cfg), in a module of its own so that any module
can record it without importing the package's top level."""
__version__ = "0.1.0"
