"""The seed's Greengrass V1 thing script, as V1 users run it today.

It uses only the AWS IoT Device SDK (AWSIoTPythonSDK): discover the core through the
discovery endpoint, connect to the core with the group CA, publish readings to a local
topic. Pointed at a Hedgerow cloud, it works unchanged: only the endpoint and the
certificate paths differ. Without BME680 hardware it publishes simulated readings.

    python3 greengrass_thing.py -e <cloud host> -r <root CA> -c <thing certificate>
        -k <private key> -id <client ID> -t <local topic> [-n COUNT]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import sys
import time

from AWSIoTPythonSDK.core.greengrass.discovery.providers import DiscoveryInfoProvider
from AWSIoTPythonSDK.core.protocol.connection.cores import ProgressiveBackOffCore
from AWSIoTPythonSDK.exception.AWSIoTExceptions import DiscoveryInvalidRequestException
from AWSIoTPythonSDK.MQTTLib import AWSIoTMQTTClient

MAX_DISCOVERY_RETRIES = 10


def read_sensor(start: float) -> dict[str, float]:
    try:
        import bme680  # noqa: PLC0415 - only on a Pi with the sensor

        sensor = bme680.BME680()
        sensor.get_sensor_data()
        return {
            "temperature": sensor.data.temperature,
            "humidity": sensor.data.humidity,
            "pressure": sensor.data.pressure,
        }
    except (ImportError, OSError, RuntimeError):
        t = time.time() - start
        return {
            "temperature": 24.0 + 2.0 * math.sin(t / 30.0) + random.uniform(-0.1, 0.1),
            "humidity": 40.0 + random.uniform(-1, 1),
            "pressure": 1013.0 + random.uniform(-0.5, 0.5),
        }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("-e", "--endpoint", required=True)
    parser.add_argument("-r", "--rootCA", required=True)
    parser.add_argument("-c", "--cert", required=True)
    parser.add_argument("-k", "--key", required=True)
    parser.add_argument("-id", "--clientId", required=True)
    parser.add_argument("-t", "--topic", required=True)
    parser.add_argument("-p", "--port", type=int, default=8443, help="discovery port")
    parser.add_argument("-n", "--count", type=int, default=0, help="readings to send (0: forever)")
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    backoff = ProgressiveBackOffCore()
    provider = DiscoveryInfoProvider()
    provider.configureEndpoint(args.endpoint, args.port)
    provider.configureCredentials(args.rootCA, args.cert, args.key)
    provider.configureTimeout(10)

    for _ in range(MAX_DISCOVERY_RETRIES):
        try:
            info = provider.discover(args.clientId)
            group_id, ca = info.getAllCas()[0]
            core = info.getAllCores()[0]
            break
        except DiscoveryInvalidRequestException as exc:
            print(f"invalid discovery request: {exc}", file=sys.stderr)
            return 1
        except BaseException as exc:  # the SDK raises many kinds; the sample retries all
            print(f"discovery failed ({type(exc).__name__}: {exc}); backing off", file=sys.stderr)
            backoff.backOff()
    else:
        print("discovery failed after retries", file=sys.stderr)
        return 1

    ca_path = f"{args.clientId}-group-ca.pem"
    with open(ca_path, "w") as f:
        f.write(ca)

    client = AWSIoTMQTTClient(args.clientId)
    client.configureCredentials(ca_path, args.key, args.cert)
    for connectivity in core.connectivityInfoList:
        client.configureEndpoint(connectivity.host, connectivity.port)
        try:
            client.connect()
            print(
                f"connected to core {connectivity.host}:{connectivity.port} (group {group_id})",
                flush=True,
            )
            break
        except BaseException as exc:
            print(
                f"connect to {connectivity.host}:{connectivity.port} failed: {exc}", file=sys.stderr
            )
    else:
        print("could not connect to any core endpoint", file=sys.stderr)
        return 1

    start = time.time()
    sent = 0
    while args.count == 0 or sent < args.count:
        reading = read_sensor(start)
        reading.update({"thing": args.clientId, "seq": sent, "timestamp": time.time()})
        client.publish(args.topic, json.dumps(reading), 1)
        sent += 1
        print(f"published {args.topic} {reading['temperature']:.2f}", flush=True)
        time.sleep(args.interval)
    client.disconnect()
    return 0


if __name__ == "__main__":
    sys.exit(main())
