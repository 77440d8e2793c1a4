"""The audit log: every exchange kept (production and canary), hash-chained, verifiable, private where asked."""
