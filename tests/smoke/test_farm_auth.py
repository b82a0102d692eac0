"""casfarm's authentication on the wire, with real clients: requests_ntlm, curl --ntlm,
pyspnego over raw h11, and forms logons as a browser makes them."""

from __future__ import annotations

import base64
import urllib.parse
from collections.abc import AsyncIterator

import casfarm
import pytest
import spnego
from casfarm import VDIRS
from casfarm.ewsxml import SAMPLE_REQUEST as SOAP

from tests.authclients import LOGIN, PASSWORD, curl_ntlm, ntlm_session, post
from tests.farmclient import HttpClient, https_client

pytestmark = pytest.mark.smoke
WINDOWS = ["Negotiate", "NTLM"]


@pytest.fixture
async def farm() -> AsyncIterator[casfarm.Farm]:
    async with casfarm.running(servers=2, auth=True) as running_farm:
        yield running_farm


async def _client(farm: casfarm.Farm, name: str = "cas1") -> HttpClient:
    server = farm.server(name)
    return await https_client(
        server.host, server.ports["https"], ca_path=farm.ca_path, server_hostname=server.fqdn
    )


def _challenges(response: object) -> list[str]:
    headers = getattr(response, "headers")  # noqa: B009 - a farmclient Response
    return [v for k, v in headers if k == "www-authenticate"]


async def test_anonymous_requests_are_challenged_as_exchange_does_and_health_stays_open(
    farm: casfarm.Farm,
) -> None:
    client = await _client(farm)
    basic = 'Basic realm="cas1.lab.local"'
    cases = [
        ("POST", "/EWS/Exchange.asmx", WINDOWS),
        ("POST", "/mapi/emsmdb/?MailboxId=a@lab.local", WINDOWS),
        ("GET", "/OAB/abc/oab.xml", WINDOWS),
        ("POST", "/Autodiscover/Autodiscover.xml", [*WINDOWS, basic]),
        ("RPC_OUT_DATA", "/rpc/rpcproxy.dll?cas1:6001", [*WINDOWS, basic]),
        ("POST", "/Microsoft-Server-ActiveSync?Cmd=Sync", [basic]),
    ]
    for method, target, offered in cases:
        response = await client.request(method, target, body=b"x" if method == "POST" else b"")
        assert (response.status, response.reason) == (401, "Unauthorized"), target
        assert _challenges(response) == offered, target
        assert response.header("x-feserver") == "CAS1"
    for vdir in VDIRS:
        check = await client.request("GET", f"{vdir.path}/healthcheck.htm")
        assert check.body == b"200 OK<br/>cas1.lab.local"
    await client.aclose()
    assert farm.counts("cas1").connections == {"https": 1}  # every 401 kept the connection


async def test_requests_ntlm_logs_on_once_and_the_connection_stays_authenticated(
    farm: casfarm.Farm,
) -> None:
    cas1 = farm.server("cas1")
    session = ntlm_session(farm.ca_path, cas1.fqdn)
    url = f"https://{cas1.host}:{cas1.ports['https']}/EWS/Exchange.asmx"
    first = await post(session, url)
    assert (first.status, first.challenges, first.server) == (200, [401, 401], "CAS1")
    again = await post(session, url)
    assert (again.status, again.challenges) == (200, [])  # no handshake: the connection is known
    session.close()
    assert farm.counts("cas1").connections == {"https": 1}
    assert farm.counts("cas1").requests == {"ews": 4}

    wrong = ntlm_session(farm.ca_path, cas1.fqdn, password="not-it")
    refused = await post(wrong, url)
    assert (refused.status, refused.challenges) == (401, [401, 401])  # offer, challenge, no
    wrong.close()


async def test_curl_ntlm_logs_on_over_one_connection(farm: casfarm.Farm) -> None:
    cas2 = farm.server("cas2")
    args = (farm.ca_path, cas2.fqdn, cas2.host, cas2.ports["https"], "/mapi/emsmdb/")
    assert await curl_ntlm(*args) == (200, 1)
    assert (await curl_ntlm(*args, password="nope"))[0] == 401
    assert (await curl_ntlm(*args, user="alice@lab.local"))[0] == 200


async def _type3_for(client: HttpClient, ntlm_client: spnego.ContextProxy) -> bytes:
    token = base64.b64encode(ntlm_client.step() or b"").decode()
    challenge = await client.request("POST", "/EWS/Exchange.asmx", [("Authorization",
                                     f"NTLM {token}")], SOAP)  # fmt: skip
    assert challenge.status == 401
    [offer] = _challenges(challenge)
    answer = ntlm_client.step(base64.b64decode(offer.split(" ", 1)[1]))
    assert answer is not None
    return answer


async def test_the_handshake_is_bound_to_its_connection(farm: casfarm.Farm) -> None:
    """What a balancer that shares or moves connections does to NTLM, and why it fails."""
    first, second = await _client(farm), await _client(farm)
    answer = await _type3_for(first, spnego.client("alice", PASSWORD, protocol="ntlm"))
    auth = [("Authorization", "NTLM " + base64.b64encode(answer).decode())]
    moved = await second.request("POST", "/EWS/Exchange.asmx", auth, SOAP)
    assert (moved.status, _challenges(moved)) == (401, WINDOWS)
    kept = await first.request("POST", "/EWS/Exchange.asmx", auth, SOAP)
    assert kept.status == 200 and b"NoError" in kept.body
    # The first connection is now alice's; the second is still nobody's.
    assert (await first.request("GET", "/OAB/x/oab.xml")).status == 200
    assert (await second.request("GET", "/OAB/x/oab.xml")).status == 401
    await first.aclose()
    await second.aclose()


async def test_activesync_takes_basic_on_each_request(farm: casfarm.Farm) -> None:
    client = await _client(farm)
    good = "Basic " + base64.b64encode(f"{LOGIN}:{PASSWORD}".encode()).decode()
    eas = "/Microsoft-Server-ActiveSync"
    options = await client.request("OPTIONS", eas, [("Authorization", good)])
    assert options.status == 200 and options.header("ms-asprotocolversions")
    assert (await client.request("OPTIONS", "/Microsoft-Server-ActiveSync")).status == 401
    await client.aclose()


async def test_owa_forms_logon_redirects_sets_a_cookie_good_on_every_server_and_440s(
    farm: casfarm.Farm,
) -> None:
    cas1, cas2 = await _client(farm, "cas1"), await _client(farm, "cas2")
    host = cas1.host
    redirect = await cas1.request("GET", "/owa/?ae=Item")
    assert redirect.status == 302
    location = redirect.header("location") or ""
    back = urllib.parse.quote(f"https://{host}/owa/?ae=Item", safe="").lower()
    assert location == f"https://{host}/owa/auth/logon.aspx?url={back}&reason=0"
    ecp = await cas1.request("GET", "/ecp/")
    assert (ecp.header("location") or "").startswith(f"https://{host}/owa/auth/logon.aspx?url=")
    page = await cas1.request("GET", "/owa/auth/logon.aspx?url=x&reason=0")
    assert page.status == 200 and b'action="/owa/auth.owa"' in page.body
    xhr = await cas1.request("POST", "/owa/service.svc?action=GetFolder", body=b"{}")
    assert (xhr.status, xhr.reason) == (440, "Login Timeout")

    form = urllib.parse.urlencode({"destination": f"https://{host}/owa/", "username": LOGIN,
                                   "password": PASSWORD, "flags": "4"}).encode()  # fmt: skip
    form_type = [("Content-Type", "application/x-www-form-urlencoded")]
    bad = await cas1.request("POST", "/owa/auth.owa", form_type, form.replace(b"Passw0rd", b"x"))
    assert bad.status == 302 and (bad.header("location") or "").endswith("&reason=2")
    assert bad.header("set-cookie") is None
    logon = await cas1.request("POST", "/owa/auth.owa", form_type, form)
    assert (logon.status, logon.header("location")) == (302, f"https://{host}/owa/")
    cookie = (logon.header("set-cookie") or "").split(";", 1)[0]
    assert cookie.startswith("cadata=")
    # The session is the farm's, not the server's: no affinity needed, as in Exchange.
    served = await cas2.request("POST", "/owa/service.svc?action=GetFolder", [("Cookie", cookie)],
                                b"{}")  # fmt: skip
    assert served.status == 200 and served.header("x-feserver") == "CAS2"
    assert (await cas2.request("GET", "/ecp/", [("Cookie", cookie)])).status == 200
    off = await cas2.request("GET", "/owa/logoff.owa", [("Cookie", cookie)])
    assert off.status == 302 and "expires=Thu, 01-Jan-1970" in (off.header("set-cookie") or "")
    forged = cookie[:-4] + "0000"
    assert (await cas2.request("POST", "/owa/service.svc", [("Cookie", forged)])).status == 440
    await cas1.aclose()
    await cas2.aclose()


async def test_without_auth_the_farm_serves_anonymously(farm: casfarm.Farm) -> None:
    async with casfarm.running(servers=1) as anonymous:
        assert anonymous.auth is None and anonymous.describe()["auth"] is None
        client = await _client(anonymous)
        assert (await client.request("POST", "/EWS/Exchange.asmx", body=SOAP)).status == 200
        assert (await client.request("GET", "/owa/")).status == 200
        await client.aclose()
    assert farm.describe()["auth"] == {
        "domain": "LAB", "users": ["alice"], "owa_session_timeout": 8 * 3600.0,
    }  # fmt: skip


async def test_auth_on_named_vdirs_only_leaves_the_others_anonymous() -> None:
    async with casfarm.running(servers=1, auth=["ews"]) as farm:
        client = await _client(farm)
        ews = await client.request("POST", "/EWS/Exchange.asmx", body=b"<soap/>")
        assert (ews.status, _challenges(ews)) == (401, WINDOWS)
        mapi = await client.request("POST", "/mapi/emsmdb/?MailboxId=a@lab.local", body=b"x")
        assert mapi.status == 200
        await client.aclose()
    with pytest.raises(ValueError, match="unknown vdirs"):
        async with casfarm.running(servers=1, auth=["nope"]):
            pass
