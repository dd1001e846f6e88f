"""The dead-letter sink: every event the Broker gave up on, kept as JSON in a bucket."""
