"""Jobs: the state machine and its commands, the watchers, the runner registry and boundary,
events and the outbox relay."""
