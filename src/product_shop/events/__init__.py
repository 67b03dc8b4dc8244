"""Transactional outbox, event types and their JSON Schemas (CloudEvents 1.0)."""
