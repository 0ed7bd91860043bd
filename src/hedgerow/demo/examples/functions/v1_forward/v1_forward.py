"""A Greengrass V1 Lambda, unchanged: it uses only the PyPI ``greengrasssdk``.

Deploy it with ``--runtime greengrass-v1 --handler v1_forward.function_handler``. It reads
the topic a message came on from the V1 context and republishes the reading, tagged, on
``v1/<thing>`` through the ``iot-data`` client — the subscription table routes it on.
"""

import json

import greengrasssdk

client = greengrasssdk.client("iot-data")


def function_handler(event, context):
    subject = context.client_context.custom["subject"]
    thing = subject.rsplit("/", 1)[-1]
    client.publish(
        topic="v1/" + thing,
        payload=json.dumps(
            {"subject": subject, "reading": event, "function": context.function_name}
        ),
    )
