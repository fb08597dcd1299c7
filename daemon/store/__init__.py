"""What the daemon keeps durably: the records, the store protocol, and the SQLite store."""
