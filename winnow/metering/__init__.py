"""The meters: what one request cost, engine and rewards alike (:mod:`.usage`)."""
