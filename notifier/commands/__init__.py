"""One module per command that does more than wiring: they return an exit status."""
