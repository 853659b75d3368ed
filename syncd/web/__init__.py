"""The web side of syncd: the customer's "choose a new time" page, the REST API, health."""
