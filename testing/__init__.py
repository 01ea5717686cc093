"""Helpers that both the tests and the benchmarks run against the real local parts.

The sample settings, the app's storage on an Azurite, the local host as a process, a receiver standing in
for Power Automate, and rows written as the registration API and the reconcile write them. Never deployed
(`.funcignore`); nothing in ``shared`` imports it.
"""
