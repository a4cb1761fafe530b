"""Cell detection and classification behind small interfaces (classical baseline, int8 TFLite)."""
