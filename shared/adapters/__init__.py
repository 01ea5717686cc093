"""Adapters to the outside: settings, storage clients, Microsoft Graph, Entra bearer tokens, callback
URLs and the guarded HTTP client that calls them, logging with redaction, Application Insights. They know
nothing of Bookings rows or messages; everything above talks to the outside through them."""
