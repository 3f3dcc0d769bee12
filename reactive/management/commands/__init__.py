"""One module per command (Django finds them by name)."""
