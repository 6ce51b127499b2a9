"""The package version, in a module of its own: the modules that record it (the manifest, the export
manifest, `--version`) import it from here, not from the package, whose `__init__` imports the API."""

__version__ = "0.1.0"
