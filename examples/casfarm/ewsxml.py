"""EWS on the wire: SOAP envelopes, faults and XML pieces, as Exchange 2016/2019 send them.

Theory of operation: requests are parsed with the stdlib's ElementTree (expat
refuses entity expansion bombs; a DOCTYPE is refused outright, as Exchange's
schema validation does). Answers are composed as text with every value
escaped, so the prefixes (s:, m:, t:) are the ones Exchange uses and clients
that match on them keep working. Pure: bytes in, values out.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
MESSAGES = "http://schemas.microsoft.com/exchange/services/2006/messages"
TYPES = "http://schemas.microsoft.com/exchange/services/2006/types"
ERRORS = "http://schemas.microsoft.com/exchange/services/2006/errors"
# Exchange 2016 CU23's ServerVersionInfo (15.1.2507.6); Version is the newest schema it speaks.
SERVER_VERSION = (15, 1, 2507, 6)
SCHEMA_VERSION = "V2017_07_11"


class SchemaError(ValueError):
    """A request that is not an EWS SOAP request; Exchange answers ErrorSchemaValidation."""


@dataclass(frozen=True)
class Request:
    """One parsed SOAP request.

    Attributes:
        operation: the Body's first element's local name, e.g. "GetFolder".
        body: that element.
        requested_version: the RequestServerVersion header's Version, if any.
    """

    operation: str
    body: ET.Element
    requested_version: str | None


def m(name: str) -> str:
    """`name` in the messages namespace, as ElementTree spells it."""
    return f"{{{MESSAGES}}}{name}"


def t(name: str) -> str:
    """`name` in the types namespace, as ElementTree spells it."""
    return f"{{{TYPES}}}{name}"


def parse(raw: bytes) -> Request:
    """The operation a SOAP request asks for.

    Raises:
        SchemaError: not XML, not a SOAP envelope, or an element of another namespace.
    """
    if b"<!DOCTYPE" in raw.upper():
        raise SchemaError("DTD is prohibited in this XML document.")
    try:
        root = ET.fromstring(raw)
    except ET.ParseError as e:
        raise SchemaError(f"Data at the root level is invalid. {e}") from None
    if root.tag != f"{{{SOAP}}}Envelope":
        raise SchemaError(f"The root element is {root.tag!r}, not a SOAP 1.1 Envelope.")
    body = root.find(f"{{{SOAP}}}Body")
    if body is None or len(body) == 0:
        raise SchemaError("The SOAP Body is missing or empty.")
    operation = body[0]
    if not operation.tag.startswith(f"{{{MESSAGES}}}"):
        raise SchemaError(f"The element {operation.tag!r} is not in the EWS messages namespace.")
    version = root.find(f"{{{SOAP}}}Header/{t('RequestServerVersion')}")
    requested = None if version is None else version.get("Version")
    return Request(operation.tag.split("}", 1)[1], operation, requested)


def text(value: object) -> str:
    """`value` escaped for element content."""
    return escape(str(value))


def attr(value: object) -> str:
    """`value` as a quoted, escaped attribute value."""
    return quoteattr(str(value))


def element(tag: str, value: object) -> str:
    """`<tag>value</tag>`, the value escaped."""
    return f"<{tag}>{text(value)}</{tag}>"


def _server_version() -> str:
    major, minor, build, revision = SERVER_VERSION
    return (
        f'<h:ServerVersionInfo MajorVersion="{major}" MinorVersion="{minor}" '
        f'MajorBuildNumber="{build}" MinorBuildNumber="{revision}" Version="{SCHEMA_VERSION}" '
        f'xmlns:h="{TYPES}" xmlns="{TYPES}" xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
        f'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"/>'
    )


def envelope(body: str) -> bytes:
    """A whole answer: the ServerVersionInfo header and `body` (which declares m: and t:)."""
    return (
        f'<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="{SOAP}">'
        f"<s:Header>{_server_version()}</s:Header><s:Body>{body}</s:Body></s:Envelope>"
    ).encode()


def response(operation: str, messages: list[str]) -> bytes:
    """`<m:{operation}Response>` holding its response messages."""
    name = f"m:{operation}Response"
    return envelope(
        f'<{name} xmlns:m="{MESSAGES}" xmlns:t="{TYPES}"><m:ResponseMessages>'
        f"{''.join(messages)}</m:ResponseMessages></{name}>"
    )


def success(operation: str, content: str = "") -> str:
    """One `ResponseClass="Success"` response message."""
    name = f"m:{operation}ResponseMessage"
    code = "<m:ResponseCode>NoError</m:ResponseCode>"
    return f'<{name} ResponseClass="Success">{code}{content}</{name}>'


def error(operation: str, code: str, message: str, content: str = "") -> str:
    """One `ResponseClass="Error"` response message: an operation-level error inside a 200."""
    name = f"m:{operation}ResponseMessage"
    return (
        f'<{name} ResponseClass="Error"><m:MessageText>{text(message)}</m:MessageText>'
        f"<m:ResponseCode>{text(code)}</m:ResponseCode>"
        f"<m:DescriptiveLinkKey>0</m:DescriptiveLinkKey>{content}</{name}>"
    )


def fault(code: str, message: str, violation: str = "") -> bytes:
    """A SOAP fault body, as Exchange sends it with HTTP 500.

    The faultcode is the ResponseCode in the types namespace; the detail repeats
    it in the errors namespace, where clients (exchangelib) look for it.
    """
    extra = ""
    if violation:
        extra = (
            f'<t:MessageXml xmlns:t="{TYPES}"><t:LineNumber>1</t:LineNumber>'
            f"<t:LinePosition>1</t:LinePosition><t:Violation>{text(violation)}</t:Violation>"
            "</t:MessageXml>"
        )
    return (
        f'<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="{SOAP}"><s:Body><s:Fault>'
        f'<faultcode xmlns:a="{TYPES}">a:{text(code)}</faultcode>'
        f'<faultstring xml:lang="en-US">{text(message)}</faultstring><detail>'
        f'<e:ResponseCode xmlns:e="{ERRORS}">{text(code)}</e:ResponseCode>'
        f'<e:Message xmlns:e="{ERRORS}">{text(message)}</e:Message>{extra}'
        "</detail></s:Fault></s:Body></s:Envelope>"
    ).encode()


SAMPLE_REQUEST_FILE = "ews-getfolder.xml"  # where casfarm writes it, beside its CA
# A whole, valid EWS request (GetFolder of the inbox), for probes and tests that only need
# an answer that is a 200.
SAMPLE_REQUEST = (
    f'<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="{SOAP}" xmlns:m="{MESSAGES}" '
    f'xmlns:t="{TYPES}"><s:Header><t:RequestServerVersion Version="Exchange2016"/></s:Header>'
    "<s:Body><m:GetFolder><m:FolderShape><t:BaseShape>Default</t:BaseShape></m:FolderShape>"
    '<m:FolderIds><t:DistinguishedFolderId Id="inbox"/></m:FolderIds></m:GetFolder></s:Body>'
    "</s:Envelope>"
).encode()
