"""A Greengrass V1 Lambda written for the V1 Modbus-RTU Protocol Adapter connector, unchanged.

It publishes the V1 adapter's request JSON on ``modbus/adapter/request`` (as the V1
connector's documentation shows) each time it is invoked; the Hedgerow Modbus connector with
``v1_adapter = true`` answers on ``modbus/adapter/response`` in the V1 shape. Route the
trigger to the function, ``function:NAME modbus/adapter/request`` to ``connector:NAME``, and
``connector:NAME modbus/adapter/response`` wherever the answers should go.

Deploy with ``--runtime greengrass-v1 --handler v1_modbus_read.function_handler``.
``MODBUS_DEVICE``, ``MODBUS_ADDRESS`` and ``MODBUS_COUNT`` choose the registers.
"""

import json
import os

import greengrasssdk

TOPIC_REQUEST = "modbus/adapter/request"

iot_client = greengrasssdk.client("iot-data")
sequence = 0


def create_read_request():
    global sequence
    sequence += 1
    return {
        "request": {
            "operation": "ReadHoldingRegistersRequest",
            "device": int(os.environ.get("MODBUS_DEVICE", "1")),
            "address": int(os.environ.get("MODBUS_ADDRESS", "0")),
            "count": int(os.environ.get("MODBUS_COUNT", "2")),
        },
        "id": f"read-{sequence}",
    }


def function_handler(event, context):
    iot_client.publish(topic=TOPIC_REQUEST, payload=json.dumps(create_read_request()))
