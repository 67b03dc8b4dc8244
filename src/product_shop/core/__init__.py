"""Shared kernel: one error tree, one clock, one id generator, one money type."""
