"""Fulfilment: drop-ship through the supplier network, in-clinic collection, digital vouchers,
and the exception queue (spec §6)."""
