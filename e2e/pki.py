"""The local cluster's certificates: one CA, one client certificate per component identity.

Each component authenticates as the identity a kubeadm cluster gives it, so RBAC and the Node
authorizer see exactly what they would in production (kubelet as ``system:node:<name>``,
kube-proxy as ``system:kube-proxy``, and so on). ECDSA P-256 keeps generation to milliseconds.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = dt.timedelta(days=3650)


@dataclass(frozen=True)
class Identity:
    """One certificate to issue: file stem, common name, organisations, usages and SANs."""

    stem: str
    common_name: str
    organizations: tuple[str, ...] = ()
    server: bool = False
    client: bool = True
    dns_names: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _name(common_name: str, organizations: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def make_ca(directory: Path, stem: str = "ca") -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    name = _name(f"rollwise-local-{stem}")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    _write_key(directory / f"{stem}.key", key)
    (directory / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert


def issue(
    directory: Path,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    who: Identity,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    usages = []
    if who.server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if who.client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(who.common_name, who.organizations))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    )
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in who.dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in who.ips]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    _write_key(directory / f"{who.stem}.key", key)
    (directory / f"{who.stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def load_ca(directory: Path, stem: str = "ca") -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = serialization.load_pem_private_key((directory / f"{stem}.key").read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{directory / stem}.key is not the EC key this module writes")
    return key, x509.load_pem_x509_certificate((directory / f"{stem}.crt").read_bytes())


def make_service_account_keys(directory: Path) -> None:
    """The key pair that signs service-account tokens (ES256)."""
    key = ec.generate_private_key(ec.SECP256R1())
    _write_key(directory / "sa.key", key)
    (directory / "sa.pub").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def make_all(directory: Path, *, host_ip: str, node_name: str, service_ip: str) -> None:
    """Issue every certificate the cluster uses into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = make_ca(directory, "ca")
    api_names = (
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    )
    identities = [
        Identity(
            "apiserver",
            "kube-apiserver",
            server=True,
            client=False,
            dns_names=api_names,
            ips=("127.0.0.1", host_ip, service_ip),
        ),
        Identity("admin", "rollwise-admin", ("system:masters",)),
        Identity("apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("system:masters",)),
        Identity("controller-manager", "system:kube-controller-manager"),
        Identity("scheduler", "system:kube-scheduler"),
        Identity("kube-proxy", "system:kube-proxy"),
        Identity("kubelet-client", f"system:node:{node_name}", ("system:nodes",)),
        Identity(
            "kubelet-serving",
            f"system:node:{node_name}",
            ("system:nodes",),
            server=True,
            client=False,
            dns_names=(node_name, "localhost"),
            ips=(host_ip, "127.0.0.1"),
        ),
        Identity("prometheus", "rollwise-prometheus"),
        Identity("kwok", "rollwise-kwok", ("system:masters",)),
        Identity("coredns", "rollwise-coredns"),
        Identity("traefik", "rollwise-traefik"),
        Identity("metrics-server", "rollwise-metrics-server"),
    ]
    for who in identities:
        issue(directory, ca_key, ca_cert, who)
    # The aggregation layer's front proxy has a CA of its own, as in kubeadm clusters.
    fp_key, fp_cert = make_ca(directory, "front-proxy-ca")
    issue(directory, fp_key, fp_cert, Identity("front-proxy-client", "front-proxy-client"))
    make_service_account_keys(directory)
