"""The sync engine: a pure planner and the runner around it (fetch → plan → commit → execute)."""
