"""Change detection: successive polls in, exactly-once viewer events out."""
