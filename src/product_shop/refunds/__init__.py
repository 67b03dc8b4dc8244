"""Refunds through Integrated Payments by named staff with fresh MFA, payment exceptions, and the
patient's right to cancel (spec §5.3, §3.3, §9, §16 Privacy)."""
