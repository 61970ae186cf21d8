"""One module per kind of work; each handler takes a ``JobContext`` and returns the result."""
