"""Hardware ports (camera) and their adapters, real and simulated."""
