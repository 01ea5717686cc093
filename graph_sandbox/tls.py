"""A self-signed certificate for the sandbox's HTTPS listener (Entra's endpoints are HTTPS-only).

Microsoft's token libraries (MSAL, azure-identity) refuse an authority that is not ``https``, so the
sandbox serves the same app on a second, TLS, socket. The certificate is made fresh at start-up for
``127.0.0.1`` and ``localhost``, valid for a day, and written (certificate only) to ``ca.pem`` in the
directory given; the app trusts it through its ``ENTRA_CA_FILE`` setting. The private key never leaves
the sandbox process's temporary directory.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CA_FILE_NAME = "ca.pem"


def make_certificate(directory: Path) -> tuple[Path, ssl.SSLContext]:
    """Write ``directory/ca.pem`` and return its path and a server context holding the matching key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "graph-sandbox (local only)")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    ca_file = directory / CA_FILE_NAME
    ca_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with tempfile.TemporaryDirectory() as secret_dir:
        key_file = Path(secret_dir) / "key.pem"
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        context.load_cert_chain(ca_file, key_file)
    return ca_file, context
