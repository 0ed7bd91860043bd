"""The provisioning messages and the membership message: round trips and refusals that
name the field."""

from __future__ import annotations

import pytest

from hedgerow.contract.errors import InvalidMessage, UnsupportedSchema
from hedgerow.contract.provisioning import (
    ClaimCredential,
    ClaimKind,
    Membership,
    ProvisionRequest,
    ProvisionResponse,
)

CSR = "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n"


def test_round_trips() -> None:
    request = ProvisionRequest("SN-1", CSR, {"site": "b"})
    assert ProvisionRequest.from_json(request.to_json()) == request
    response = ProvisionResponse(
        ClaimKind.CORE, "gw-1", "site-1", "CERT", "ROOT", "https://c:8443", "mqtts://c:8884",
        "[core]\n", "KEY",
    )  # fmt: skip
    assert ProvisionResponse.from_json(response.to_json()) == response
    membership = Membership(("b", "a"), ("PEM",), {"ab12": "legacy-2"})
    again = Membership.from_json(membership.to_json())
    assert again.things == ("a", "b") and again.certificate_names == {"ab12": "legacy-2"}
    assert Membership.from_json('{"things": ["x"]}') == Membership(("x",))  # older clouds


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('{"schema": 2, "serial": "a", "csr": "x"}', "schema"),
        ('{"serial": "a b", "csr": "' + CSR.replace("\n", "\\n") + '"}', "serial"),
        ('{"serial": "a", "csr": "not a csr"}', "csr"),
        ('{"serial": "a", "csr": "' + CSR.replace("\n", "\\n") + '", "attributes": [1]}',
         "attributes"),
    ],
)  # fmt: skip
def test_requests_are_refused_naming_the_field(text: str, field: str) -> None:
    with pytest.raises((InvalidMessage, UnsupportedSchema)) as caught:
        ProvisionRequest.from_json(text)
    assert caught.value.field == field


def test_a_core_response_needs_its_bundle_and_credentials_are_checked() -> None:
    with pytest.raises(InvalidMessage) as caught:
        ProvisionResponse.from_json(
            '{"kind": "core", "name": "g", "group": "s", "certificate": "C", "root_ca": "R",'
            ' "https": "https://c"}'
        )
    assert caught.value.field == "config"
    with pytest.raises(InvalidMessage, match="not a claim credential"):
        ClaimCredential.from_tar(b"not a tar")
