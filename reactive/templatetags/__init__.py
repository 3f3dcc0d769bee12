"""The reactive layer's template tags, loaded with ``{% load reactive %}``."""
