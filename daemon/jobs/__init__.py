"""Jobs: intake, the state machine, the job environment, answers, the command table, the watchers,
the runner registry and its error boundary, events and the outbox relay."""
