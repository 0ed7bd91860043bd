"""The protocol's numbers: operations and response statuses, as the SDKs define them."""

from __future__ import annotations

import enum
from typing import Final


class Operation(enum.IntEnum):
    Unknown = 0
    Connect = 1
    CreateMessageStream = 2
    DeleteMessageStream = 3
    AppendMessage = 4
    ReadMessages = 5
    ConnectResponse = 6
    CreateMessageStreamResponse = 7
    DeleteMessageStreamResponse = 8
    AppendMessageResponse = 9
    ReadMessagesResponse = 10
    ListStreams = 11
    ListStreamsResponse = 12
    DescribeMessageStream = 13
    DescribeMessageStreamResponse = 14
    UpdateMessageStream = 15
    UpdateMessageStreamResponse = 16
    UnknownOperationError = 17


#: Each request's response operation.
RESPONSE_OF: Final = {
    Operation.CreateMessageStream: Operation.CreateMessageStreamResponse,
    Operation.DeleteMessageStream: Operation.DeleteMessageStreamResponse,
    Operation.AppendMessage: Operation.AppendMessageResponse,
    Operation.ReadMessages: Operation.ReadMessagesResponse,
    Operation.ListStreams: Operation.ListStreamsResponse,
    Operation.DescribeMessageStream: Operation.DescribeMessageStreamResponse,
    Operation.UpdateMessageStream: Operation.UpdateMessageStreamResponse,
}


class Status(enum.IntEnum):
    """``ResponseStatusCode``: the SDKs raise one exception class per value."""

    Success = 0
    UnknownFailure = 1
    Unauthorized = 2
    InvalidRequest = 3
    RequestPayloadTooLarge = 4
    ResourceNotFound = 5
    ServerTimeout = 6
    ResponsePayloadTooLarge = 7
    UnsupportedConnectVersion = 8
    UnexpectedOperation = 9
    UnsupportedProtocolVersion = 10
    InvalidProtocolVersion = 11
    FailedToConnect = 12
    NotEnoughMessages = 13
    MessageStoreReadError = 14
    OutOfMemoryError = 15
    UpdateFailed = 16
    UpdateNotAllowed = 17
    UnknownOperation = 18
