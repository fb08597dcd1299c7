"""The Python client for dm-jobd: what DM backends import, and what the CLI is built on.

async with await JobdClient.connect() as client:      # DM_JOBD_AMQP_URL, or the local broker
    job = await client.submit(entity)                 # raises UnknownRunner, BadCommand, ...
    final = await job.wait(timeout=60)                # race-free, however fast the job is
    if final.status is JobStatus.COMPLETED:
        print(await job.result())
"""

from daemon.bus.amqp import BrokerRefused, BrokerUnreachable
from daemon.client.handle import JobHandle
from daemon.client.jobd import JobdClient
from daemon.client.stream import EventStream
from daemon.client.url import BadBrokerUrl, NoBroker, broker_url

__all__ = [
    "BadBrokerUrl",
    "BrokerRefused",
    "BrokerUnreachable",
    "EventStream",
    "JobHandle",
    "JobdClient",
    "NoBroker",
    "broker_url",
]
