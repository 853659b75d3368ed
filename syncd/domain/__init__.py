"""The pure domain of 1-to-1 sessions: no I/O, no SQLAlchemy."""
