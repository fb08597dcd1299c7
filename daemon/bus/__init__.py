"""The message bus: everything that speaks AMQP, and the only package that imports aio-pika."""
