"""Product Shop: Primoro's clinician-recommended commerce module."""

__version__ = "0.1.0"
