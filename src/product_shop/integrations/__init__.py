"""Ports (Protocols) for the other Primoro modules, and their HTTP adapters."""
