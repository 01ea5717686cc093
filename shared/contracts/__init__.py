"""Leaf modules of promises to the outside, importing nothing else of the app: the API error catalogue
(``errors``), the telemetry events admins alert on (``events``), the payload flows receive
(``appointment_data``, with its change details, sample and upgrades in ``appointment_changes``, read from
Graph's JSON through ``graph_json`` and ``graph_times``) and the NCRONTAB schedules of the timers as the
Functions host runs them (``ncrontab``)."""
