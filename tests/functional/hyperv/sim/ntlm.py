"""Negotiate (NTLM) authentication and message encryption, server side.

WinRM over http authenticates a connection with HTTP Negotiate: the client
sends ``Authorization: Negotiate <token>``, the listener answers 401 with
``WWW-Authenticate: Negotiate <challenge>`` until the context is complete;
the connection then stays authenticated.  Messages on it are encrypted
([MS-WSMV] 2.2.9.1.1, Negotiate/SPNEGO encryption): a
``multipart/encrypted;protocol="application/HTTP-SPNEGO-session-encrypted"``
body whose first part gives ``OriginalContent: type=…;Length=<n>`` and
whose second part is ``<4-byte little-endian signature length><signature>
<sealed message>``, closed by ``--Encrypted Boundary--``.

The NTLM exchange and sealing are pyspnego's acceptor (the library pywinrm's
own NTLM client rests on); its credentials come from the file named by
``NTLM_USER_FILE`` (``DOMAIN:USER:PASSWORD`` lines).
"""

from __future__ import annotations

import base64
import binascii
import struct

import spnego
from spnego import exceptions as spnego_exc

BOUNDARY = b'--Encrypted Boundary'
PROTOCOL = 'application/HTTP-SPNEGO-session-encrypted'
CONTENT_TYPE = (f'multipart/encrypted;protocol="{PROTOCOL}";'
                f'boundary="Encrypted Boundary"')
SCHEMES = ('negotiate', 'ntlm')


class AuthFailed(Exception):
    """The token is not part of a valid NTLM exchange (bad credentials)."""


class Context:
    """One connection's NTLM acceptor context."""

    def __init__(self) -> None:
        self._ctx = spnego.server(protocol='ntlm')

    @property
    def complete(self) -> bool:
        return self._ctx.complete

    def step(self, header: str) -> str | None:
        """Consume ``Authorization: Negotiate <b64>``; returns the reply token.

        :raises: AuthFailed.
        """
        try:
            token = base64.b64decode(header.split(None, 1)[1], validate=True)
            out = self._ctx.step(token)
        except (IndexError, binascii.Error, spnego_exc.SpnegoError) as exc:
            raise AuthFailed(str(exc)) from exc
        return None if not out else base64.b64encode(out).decode()

    def decrypt(self, body: bytes) -> bytes:
        """The SOAP message inside an encrypted body.

        :raises: AuthFailed when it does not verify.
        """
        parts = [p for p in body.split(BOUNDARY + b'\r\n') if p]
        if len(parts) != 2 or b'Length=' not in parts[0]:
            raise AuthFailed('not a multipart/encrypted message')
        length = int(parts[0].strip().split(b'Length=')[1])
        payload = parts[1]
        if payload.endswith(BOUNDARY + b'--\r\n'):
            payload = payload[:-len(BOUNDARY + b'--\r\n')]
        payload = payload.replace(
            b'\tContent-Type: application/octet-stream\r\n', b'', 1)
        sig_len = struct.unpack('<i', payload[:4])[0]
        try:
            message = self._ctx.unwrap_winrm(payload[4:4 + sig_len],
                                             payload[4 + sig_len:])
        except spnego_exc.SpnegoError as exc:
            raise AuthFailed(str(exc)) from exc
        if len(message) != length:
            raise AuthFailed('encrypted length does not match')
        return message

    def encrypt(self, message: bytes,
                content_type: str = 'application/soap+xml;charset=UTF-8'
                ) -> bytes:
        wrapped = self._ctx.wrap_winrm(message)
        return (BOUNDARY + b'\r\n'
                b'\tContent-Type: ' + PROTOCOL.encode() + b'\r\n'
                b'\tOriginalContent: type=' + content_type.encode() +
                b';Length=' + str(len(message)).encode() + b'\r\n' +
                BOUNDARY + b'\r\n'
                b'\tContent-Type: application/octet-stream\r\n' +
                struct.pack('<i', len(wrapped.header)) + wrapped.header +
                wrapped.data + BOUNDARY + b'--\r\n')
