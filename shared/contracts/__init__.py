"""Leaf modules of promises to the outside, importing nothing else of the app: the API error catalogue
(``errors``), the telemetry events admins alert on (``events``) and the payload flows receive
(``appointment_data``)."""
