"""What endpoints and workers do that takes more than one row or a call to Graph, one noun per module: a
business in Graph (``bookings``: the only door to its appointments, calendar and lookups) and the actions on it
(``appointments``), the mailbox's Graph subscription (``subscriptions``), the directory of Bookings businesses
(``bookings_directory``), dead-letter replay (``dead_letters``) and test events (``test_events``). Graph's
failures leave them as ``graph_failures.GraphFailure``: catalogue errors that keep Graph's status."""
