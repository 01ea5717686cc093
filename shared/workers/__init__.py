"""The queue and timer functions: reconcile (hints to events), fan-out and delivery (events to flows),
the sweeps (outbox, resync, subscription renewal)."""
