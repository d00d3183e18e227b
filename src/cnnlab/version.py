"""cnnlab's version, in one place (the package front and every writer of a version read it here)."""

__version__ = "0.1.0"
