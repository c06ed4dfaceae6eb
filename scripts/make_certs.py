"""Write a development CA, a server certificate and a client certificate for TLS and mutual TLS.

    python scripts/make_certs.py --out certs          # what `make certs` runs

Files (PEM; keys are mode 0600): ``ca.pem``/``ca.key`` (the CA), ``server.pem``/``server.key`` (for
``localhost``, ``127.0.0.1`` and ``::1``, or ``--host`` names), ``client.pem``/``client.key`` (CN
``--client``, for mutual TLS). Serve with them::

    HIPGEN_TLS_CERT_FILE=certs/server.pem HIPGEN_TLS_KEY_FILE=certs/server.key \\
    HIPGEN_TLS_CLIENT_CA_FILE=certs/ca.pem python -m services.server

For development and tests only: the CA key lies beside the certificates and nothing revokes them; never
commit them (``certs/`` is git-ignored). ECDSA P-256 keys: fast to make, accepted by gRPC's BoringSSL.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
FILES = ("ca.pem", "ca.key", "server.pem", "server.key", "client.pem", "client.key")


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hipgen dev"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _certificate(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    days: int,
    extensions: Sequence[tuple[x509.ExtensionType, bool]],
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))  # tolerate a little clock skew
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())


def _leaf(
    common_name: str,
    usage: x509.ObjectIdentifier,
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    days: int,
    hosts: Sequence[str] = (),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    extensions: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            True,
        ),
        (x509.ExtendedKeyUsage([usage]), False),
        (x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False),
    ]
    if hosts:
        extensions.append((x509.SubjectAlternativeName([_san(h) for h in hosts]), False))
    return _certificate(_name(common_name), key, ca.subject, ca_key, days, extensions), key


def _write(path: Path, data: bytes, private: bool = False) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_certs(
    out: str | Path,
    *,
    hosts: Sequence[str] = DEFAULT_HOSTS,
    client: str = "hipgen-client",
    days: int = 365,
    force: bool = False,
) -> dict[str, Path]:
    """Write the CA, server and client certificates and keys into ``out``; return name -> path.

    Raises ``FileExistsError`` when ``out`` already holds any of them, unless ``force``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in FILES}
    existing = [p.name for p in paths.values() if p.exists()]
    if existing and not force:
        raise FileExistsError(f"{out} already has {', '.join(existing)}; pass --force to replace them")

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("hipgen development CA")
    ca = _certificate(
        ca_name,
        ca_key,
        ca_name,
        ca_key,
        days,
        [
            (x509.BasicConstraints(ca=True, path_length=0), True),
            (
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                True,
            ),
        ],
    )
    server, server_key = _leaf(hosts[0], ExtendedKeyUsageOID.SERVER_AUTH, ca, ca_key, days, hosts)
    client_cert, client_key = _leaf(client, ExtendedKeyUsageOID.CLIENT_AUTH, ca, ca_key, days)

    pem = serialization.Encoding.PEM
    _write(paths["ca.pem"], ca.public_bytes(pem))
    _write(paths["ca.key"], _key_pem(ca_key), private=True)
    _write(paths["server.pem"], server.public_bytes(pem))
    _write(paths["server.key"], _key_pem(server_key), private=True)
    _write(paths["client.pem"], client_cert.public_bytes(pem))
    _write(paths["client.key"], _key_pem(client_key), private=True)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("certs"), help="output folder (default: certs)")
    parser.add_argument(
        "--host",
        action="append",
        dest="hosts",
        help=f"server name or IP, repeatable (default: {', '.join(DEFAULT_HOSTS)})",
    )
    parser.add_argument("--client", default="hipgen-client", help="client certificate common name")
    parser.add_argument("--days", type=int, default=365, help="validity in days (default: 365)")
    parser.add_argument("--force", action="store_true", help="replace existing files")
    args = parser.parse_args(argv)
    try:
        paths = make_certs(
            args.out, hosts=args.hosts or DEFAULT_HOSTS, client=args.client, days=args.days, force=args.force
        )
    except FileExistsError as err:
        print(f"make_certs: {err}", file=sys.stderr)
        return 1
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
