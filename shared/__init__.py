"""The application package: everything function_app.py wires to a trigger lives here, in layers
(``docs/architecture.md``): endpoints and workers (entry points) over services, over records and messages,
over adapters, over contracts. ``lint-imports`` checks that no layer imports one above it."""
