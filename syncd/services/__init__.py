"""The booking use cases every entry point calls (CLI, REST, the customer page, the engine)."""
