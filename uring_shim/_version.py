"""The package version; the compiled module must report the same (US_VERSION)."""
__version__ = "0.1.0"
