"""The application package: everything function_app.py wires to a trigger lives here."""
