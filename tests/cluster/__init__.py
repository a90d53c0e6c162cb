"""Several server_core nodes behind HAProxy (docs/scale-out.md)."""
