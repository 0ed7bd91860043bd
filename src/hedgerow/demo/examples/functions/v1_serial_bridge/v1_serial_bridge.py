"""A Greengrass V1 Lambda, unchanged: a serial-port bridge using only the PyPI ``greengrasssdk``.

Deploy it pinned with ``--runtime greengrass-v1 --device /dev/ttyUSB0:rw --volume
/etc/bridge:/config:ro --env SERIAL_DEVICE=/dev/ttyUSB0 --env CONFIG_DIR=/config``. Each
line read from the serial device is published on ``serial/in`` through ``iot-data`` and
acknowledged on the device (``ack:<line>``); the line ``status`` makes it report on
``serial/status`` what it sees of its configuration volume (and that it cannot write there).
"""

import errno
import json
import os
import threading

import greengrasssdk

client = greengrasssdk.client("iot-data")
DEVICE = os.environ["SERIAL_DEVICE"]
CONFIG_DIR = os.environ["CONFIG_DIR"]


def _status():
    status = {"groups": os.getgroups(), "uid": os.getuid()}
    with open(os.path.join(CONFIG_DIR, "bridge.conf")) as config:
        status["config"] = config.read()
    try:
        with open(os.path.join(CONFIG_DIR, "written-by-function"), "w") as out:
            out.write("should not be possible")
        status["config_write"] = "written"
    except OSError as exc:
        status["config_write"] = errno.errorcode.get(exc.errno, str(exc.errno))
    return status


def _bridge():
    fd = os.open(DEVICE, os.O_RDWR | os.O_NOCTTY)
    pending = b""
    while True:
        chunk = os.read(fd, 256)
        if not chunk:
            return
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            if line == b"status":
                client.publish(topic="serial/status", payload=json.dumps(_status()))
            else:
                client.publish(topic="serial/in", payload=json.dumps({"line": line.decode()}))
            os.write(fd, b"ack:" + line + b"\n")


threading.Thread(target=_bridge, name="serial-bridge", daemon=True).start()


def function_handler(event, context):
    return None
