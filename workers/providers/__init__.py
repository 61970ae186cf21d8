"""Provider adapters: each wraps one SDK and maps its errors onto ``unilingo.errors``."""
