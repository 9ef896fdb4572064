"""Throw-away PKI for TLS tests (loopback only)."""

from __future__ import annotations

import datetime
from pathlib import Path


def make_pki(tmp: Path) -> dict[str, Path]:
    """A test CA, a server certificate for 127.0.0.1 and a client certificate
    (CN linstor-csi-controller), as PEM files in ``tmp``: ca.crt, server.crt/.key, client.crt/.key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def key():
        return ec.generate_private_key(ec.SECP256R1())

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = key()
    ca = (x509.CertificateBuilder().subject_name(name("test-ca")).issuer_name(name("test-ca"))
          .public_key(ca_key.public_key()).serial_number(1)
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))

    def leaf(cn: str, usage, san: bool):
        k = key()
        b = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca.subject)
             .public_key(k.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5))
             .not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if san:
            import ipaddress

            b = b.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        return k, b.sign(ca_key, hashes.SHA256())

    out: dict[str, Path] = {}

    def write(label: str, k, cert) -> None:
        out[label + ".crt"] = tmp / f"{label}.crt"
        out[label + ".crt"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        if k is not None:
            out[label + ".key"] = tmp / f"{label}.key"
            out[label + ".key"].write_bytes(k.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption()))

    write("ca", None, ca)
    write("server", *leaf("127.0.0.1", ExtendedKeyUsageOID.SERVER_AUTH, True))
    write("client", *leaf("linstor-csi-controller", ExtendedKeyUsageOID.CLIENT_AUTH, False))
    return out


def java_stores(pki: dict[str, Path], tmp: Path, password: str = "linstor-test") -> dict[str, Path]:
    """LINSTOR's ``[https]`` stores made with the JDK's ``keytool`` from :func:`make_pki`'s PEM
    files: ``keystore.jks`` (server key + certificate, imported from a PKCS#12 bundle) and
    ``truststore.jks`` (the CA, trusted for client certificates)."""
    import subprocess

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12
    from cryptography.x509 import load_pem_x509_certificate

    key = serialization.load_pem_private_key(pki["server.key"].read_bytes(), None)
    cert = load_pem_x509_certificate(pki["server.crt"].read_bytes())
    ca = load_pem_x509_certificate(pki["ca.crt"].read_bytes())
    bundle = tmp / "server.p12"
    bundle.write_bytes(pkcs12.serialize_key_and_certificates(
        b"linstor", key, cert, [ca],  # type: ignore[arg-type]
        serialization.BestAvailableEncryption(password.encode())))
    out = {"keystore": tmp / "keystore.jks", "truststore": tmp / "truststore.jks"}
    for path in out.values():
        path.unlink(missing_ok=True)
    subprocess.run(["keytool", "-importkeystore", "-noprompt",
                    "-srckeystore", str(bundle), "-srcstoretype", "PKCS12",
                    "-srcstorepass", password, "-destkeystore", str(out["keystore"]),
                    "-deststoretype", "JKS", "-deststorepass", password,
                    "-destkeypass", password],
                   check=True, capture_output=True, timeout=120)
    subprocess.run(["keytool", "-importcert", "-noprompt", "-trustcacerts", "-alias", "test-ca",
                    "-file", str(pki["ca.crt"]), "-keystore", str(out["truststore"]),
                    "-storetype", "JKS", "-storepass", password],
                   check=True, capture_output=True, timeout=120)
    return out
