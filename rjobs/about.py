"""The version of rjobs, written once: the package metadata (``pyproject.toml``, dynamic),
``rjobs.__version__`` and ``rjobs --version`` all read it from here."""

__all__ = ["VERSION"]

#: This release of rjobs.
VERSION = "0.1.0"
