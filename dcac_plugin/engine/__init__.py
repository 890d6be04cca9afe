"""Training engine pieces: prototype memory, LR schedule (and the DCAC engine)."""
