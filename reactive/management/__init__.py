"""The reactive layer's management commands: ``reactive_stats``, ``reactive_triggers``."""
