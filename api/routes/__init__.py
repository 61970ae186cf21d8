"""HTTP routes; each module holds one ``router`` and stays thin."""
