"""A Greengrass V1 Lambda, unchanged: it reads a secret through the PyPI ``greengrasssdk``.

Deploy it pinned with ``--runtime greengrass-v1 --secret greengrass-api-key``. Every
second (at most ``REPORTS`` times per start) it reads the secret named by ``SECRET_NAME``
and publishes on ``secrets/report`` a fingerprint of the value — never the value — with
what reading ``UNDECLARED_NAME`` (a secret it does not declare) answered.
"""

import hashlib
import json
import os
import threading
import time
import uuid

import greengrasssdk

secrets = greengrasssdk.client("secretsmanager")
iot = greengrasssdk.client("iot-data")
BOOT = uuid.uuid4().hex
REPORTS = 300


def _report():
    got = secrets.get_secret_value(SecretId=os.environ["SECRET_NAME"])
    report = {
        "boot": BOOT,
        "sha256": hashlib.sha256(got["SecretString"].encode()).hexdigest(),
        "name": got["Name"],
        "arn": got["ARN"],
        "version_id": got["VersionId"],
        "stages": got["VersionStages"],
        "created": got["CreatedDate"].isoformat(),
    }
    try:
        secrets.get_secret_value(SecretId=os.environ["UNDECLARED_NAME"])
        report["undeclared"] = "read"
    except Exception as exc:
        report["undeclared"] = type(exc).__name__ + ": " + str(exc)
    return report


def _loop():
    for _ in range(REPORTS):
        try:
            iot.publish(topic="secrets/report", payload=json.dumps(_report()))
        except Exception as exc:
            iot.publish(
                topic="secrets/report", payload=json.dumps({"boot": BOOT, "error": str(exc)})
            )
        time.sleep(1)


threading.Thread(target=_loop, name="secret-reader", daemon=True).start()


def function_handler(event, context):
    return None
