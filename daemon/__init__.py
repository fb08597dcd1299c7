"""dm-jobd: runs Data Modelling jobs for commands that arrive over RabbitMQ."""

__version__ = "0.1.0"
