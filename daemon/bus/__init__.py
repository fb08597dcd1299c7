"""The message bus: the protocols the core uses (ports, message), RabbitMQ behind them (amqp, the only
aio-pika importer) and an in-memory bus for tests (memory)."""
