"""Checkout sessions, server-side pricing, payment capture through Integrated Payments, and the
one place where an Order is born."""
