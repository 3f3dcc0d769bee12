"""A URLconf with none of reactive's routes (tests of the system check reactive.W002)."""

urlpatterns: list = []
