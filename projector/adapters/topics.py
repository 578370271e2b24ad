"""What the broker says of a topic: whether it exists, its partitions, and its id — what tells one
incarnation of a topic from another of the same name.

A topic deleted and created again gets a new id from the broker (Kafka 2.8+); compaction and
retention leave it. aiokafka's metadata requests stop at a version without ids, so this module
asks with Metadata v12, defined here from Kafka's protocol description (flexible version:
compact strings and arrays, tagged fields).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO

from aiokafka import AIOKafkaClient
from aiokafka.errors import UnknownTopicOrPartitionError, for_code
from aiokafka.protocol.admin import DescribeConfigsRequest
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    AbstractType,
    Boolean,
    CompactArray,
    CompactString,
    Int16,
    Int32,
    Schema,
    TaggedFields,
)

NO_ID = uuid.UUID(int=0)


class Uuid(AbstractType[uuid.UUID]):
    @classmethod
    def encode(cls, value: uuid.UUID | None) -> bytes:
        return (value or NO_ID).bytes

    @classmethod
    def decode(cls, data: BytesIO) -> uuid.UUID:
        return uuid.UUID(bytes=data.read(16))


class MetadataResponse_v12(Response):
    API_KEY = 3
    API_VERSION = 12
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "brokers",
            CompactArray(
                ("node_id", Int32),
                ("host", CompactString("utf-8")),
                ("port", Int32),
                ("rack", CompactString("utf-8")),
                ("tags", TaggedFields),
            ),
        ),
        ("cluster_id", CompactString("utf-8")),
        ("controller_id", Int32),
        (
            "topics",
            CompactArray(
                ("error_code", Int16),
                ("name", CompactString("utf-8")),
                ("topic_id", Uuid),
                ("is_internal", Boolean),
                (
                    "partitions",
                    CompactArray(
                        ("error_code", Int16),
                        ("partition_index", Int32),
                        ("leader_id", Int32),
                        ("leader_epoch", Int32),
                        ("replica_nodes", CompactArray(Int32)),
                        ("isr_nodes", CompactArray(Int32)),
                        ("offline_replicas", CompactArray(Int32)),
                        ("tags", TaggedFields),
                    ),
                ),
                ("topic_authorized_operations", Int32),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class MetadataRequest_v12(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 3
    API_VERSION = 12
    RESPONSE_TYPE = MetadataResponse_v12
    SCHEMA = Schema(
        (
            "topics",
            CompactArray(("topic_id", Uuid), ("name", CompactString("utf-8")), ("tags", TaggedFields)),
        ),
        ("allow_auto_topic_creation", Boolean),
        ("include_topic_authorized_operations", Boolean),
        ("tags", TaggedFields),
    )


class TopicMetadataRequest(Request[MetadataRequest_v12]):
    API_KEY = 3

    def __init__(self, topics: Sequence[str]) -> None:
        self.topics = list(topics)

    def build(self, request_struct_class: type[MetadataRequest_v12]) -> MetadataRequest_v12:
        return request_struct_class([(None, t, {}) for t in self.topics], False, False, {})


@dataclass(frozen=True, slots=True)
class Topic:
    id: uuid.UUID
    partitions: tuple[int, ...]


def usable(topic: Topic | None) -> bool:
    """Whether records can be written to and read from it: it exists, with partitions."""
    return topic is not None and bool(topic.partitions)


async def describe(client: AIOKafkaClient, topics: Sequence[str]) -> dict[str, Topic | None]:
    """Each topic's id and partitions; None for a topic that does not exist (any other error
    raises, e.g. TopicAuthorizationFailedError)."""
    response = await client.send(client.get_random_node(), TopicMetadataRequest(topics))
    found: dict[str, Topic | None] = {}
    for error_code, name, topic_id, _internal, partitions, *_ in response.topics:
        error = for_code(error_code)
        if error is UnknownTopicOrPartitionError:
            found[name] = None
        elif error_code:
            raise error(f"metadata of topic {name!r}")
        else:
            found[name] = Topic(topic_id, tuple(sorted(p[1] for p in partitions)))
    return found


TOPIC_RESOURCE = 2  # DescribeConfigs' resource type of a topic


async def max_message_bytes(client: AIOKafkaClient, topic: str) -> int | None:
    """The topic's `max.message.bytes` (its own, or the broker's default): the largest record
    batch the broker takes on it, after compression. None if the broker does not say (a
    principal without DescribeConfigs on it, say)."""
    request = DescribeConfigsRequest([(TOPIC_RESOURCE, topic, ["max.message.bytes"])])
    response = await client.send(client.get_random_node(), request)
    for error_code, _message, _type, _name, entries in response.resources:
        if error_code:
            return None
        for name, value, *_ in entries:
            if name == "max.message.bytes" and value:
                return int(value)
    return None
