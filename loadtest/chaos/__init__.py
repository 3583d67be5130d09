"""The fault suite (`make chaos`): steady load on the replicated deployment, one fault at a time,
and a checker that judges the service by the acks it recorded and the clap log, never by what the
service says about itself. See docs/RELIABILITY.md."""
