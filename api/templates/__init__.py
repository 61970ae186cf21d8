"""HTML pages the API serves, kept as Python strings so they ship inside the package."""
