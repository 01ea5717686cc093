"""The certificate of the sandbox's HTTPS listener (Entra's endpoints are HTTPS-only), made with trustme.

Microsoft's token libraries (MSAL, azure-identity) refuse an authority that is not ``https``, so the
sandbox serves the same app on a second, TLS, socket. At start-up a fresh local certificate authority
issues the listener's certificate for ``127.0.0.1`` and ``localhost``, valid for a day; the authority's certificate is
written to ``ca.pem`` in the directory given, and the app trusts it through its ``ENTRA_CA_FILE`` setting.
The private keys stay in the sandbox process's memory.
"""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

import trustme

CA_FILE_NAME = "ca.pem"


def make_certificate(directory: Path) -> tuple[Path, ssl.SSLContext]:
    """Write ``directory/ca.pem`` and return its path and a server context holding the listener's key."""
    authority = trustme.CA(organization_name="graph-sandbox (local only)")
    directory.mkdir(parents=True, exist_ok=True)
    ca_file = directory / CA_FILE_NAME
    authority.cert_pem.write_to_path(str(ca_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    now = datetime.datetime.now(datetime.UTC)
    certificate = authority.issue_cert("127.0.0.1", "localhost", not_before=now - datetime.timedelta(minutes=5),
                                       not_after=now + datetime.timedelta(days=1))
    certificate.configure_cert(context)
    return ca_file, context
