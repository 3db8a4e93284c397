"""Throwaway certificates made with openssl at test time: a CA, and a broker's certificate it
signs for 127.0.0.1 and localhost (nothing is kept in the repository)."""

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True, slots=True)
class Certificates:
    ca: Path  # the CA's certificate: what `--broker-ca` names
    cert: Path  # the broker's certificate, signed by the CA
    key: Path  # its key


def _openssl(*args: str | Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is missing: make system-tests installs it")
    done = subprocess.run(
        [openssl, *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr


def make_ca(directory: Path, name: str = "facilities test CA") -> tuple[Path, Path]:
    """A self-signed CA in `directory`: its certificate and its key."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "ca.crt", directory / "ca.key"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", key, "-out", cert, "-days", "2", "-subj", f"/CN={name}",
    )  # fmt: skip
    return cert, key


def make_certificates(directory: Path) -> Certificates:
    """A CA and a server certificate it signed, for 127.0.0.1 and localhost."""
    ca, ca_key = make_ca(directory)
    key, request, cert = (
        directory / "server.key",
        directory / "server.csr",
        directory / "server.crt",
    )
    extensions = directory / "server.ext"
    extensions.write_text("subjectAltName = IP:127.0.0.1, DNS:localhost\n")
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", key, "-out", request, "-subj", "/CN=localhost",
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", request, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
        "-out", cert, "-days", "2", "-extfile", extensions,
    )  # fmt: skip
    return Certificates(ca=ca, cert=cert, key=key)
