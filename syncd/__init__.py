"""syncd."""
