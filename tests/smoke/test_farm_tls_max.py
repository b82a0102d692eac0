"""casfarm --tls-max: a farm that speaks TLS 1.2 at most, as Exchange on Windows Server
2016/2019 does, on its HTTPS and implicit-TLS mail ports alike."""

from __future__ import annotations

import ssl

import casfarm
import pytest
from typer.testing import CliRunner

from lb.cli import app
from lb.cli.farm import TlsMax
from tests.farmclient import open_tls

pytestmark = pytest.mark.smoke


@pytest.mark.parametrize(
    ("tls_max", "spoken"),
    [(ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.MAXIMUM_SUPPORTED, "TLSv1.3")],
)
async def test_the_farm_negotiates_no_newer_tls_than_its_maximum(
    tls_max: ssl.TLSVersion, spoken: str
) -> None:
    async with casfarm.running(servers=1, control=False, tls_max=tls_max) as farm:
        s = farm.server("cas1")
        for kind in ("https", "imaps", "pops"):
            stream = await open_tls(s.host, s.ports[kind], ca_path=farm.ca_path,
                                    server_hostname=s.fqdn)
            async with stream:
                assert stream.version() == spoken, kind


def test_every_tls_max_choice_names_a_version() -> None:
    assert [m.version for m in TlsMax] == [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]
    result = CliRunner().invoke(app, ["farm", "--tls-max", "1.1"])
    assert result.exit_code == 2
    assert "--tls-max" in result.output
