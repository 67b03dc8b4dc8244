"""Clinician recommendations (spec §4.1): a named clinician of the practice recommends
catalogue products to one of its patients."""
