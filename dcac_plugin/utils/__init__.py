"""Small shared helpers (atomic file writes, device choice, run metadata)."""
