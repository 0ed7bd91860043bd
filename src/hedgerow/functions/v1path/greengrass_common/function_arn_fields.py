"""Parsing and building Lambda function ARNs as the V1 SDK needs them."""

from __future__ import annotations

_PREFIX = "arn"


class FunctionArnFields:
    """``arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>]``."""

    def __init__(self, function_arn: str) -> None:
        if not isinstance(function_arn, str) or not function_arn:
            raise ValueError(f"invalid function ARN: {function_arn!r}")
        self.function_arn = function_arn
        parts = function_arn.split(":")
        if parts[0] != _PREFIX:
            # a bare function name, optionally with :qualifier
            self.region = ""
            self.account_id = ""
            self.name = parts[0]
            self.qualifier = parts[1] if len(parts) > 1 else ""
            self.unqualified_arn = self.name
            return
        if len(parts) < 7 or parts[2] != "lambda" or parts[5] != "function":
            raise ValueError(f"invalid function ARN: {function_arn!r}")
        self.region = parts[3]
        self.account_id = parts[4]
        self.name = parts[6]
        self.qualifier = parts[7] if len(parts) > 7 else ""
        self.unqualified_arn = ":".join(parts[:7])

    @staticmethod
    def build_arn_string(region: str, account_id: str, name: str, qualifier: str = "") -> str:
        arn = f"arn:aws:lambda:{region}:{account_id}:function:{name}"
        return f"{arn}:{qualifier}" if qualifier else arn

    @staticmethod
    def build_function_arn(unqualified_arn: str, qualifier: str | None = None) -> str:
        return f"{unqualified_arn}:{qualifier}" if qualifier else unqualified_arn
