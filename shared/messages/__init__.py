"""The queue messages: one module owns each queue's message format, how it is built, parsed and sent."""
