"""The projector: numbered totals from the fan-out topic into durable Cassandra rows."""
