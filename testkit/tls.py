"""TLS for tests: a throw-away CA and a server certificate for 127.0.0.1, and a TLS redis-server.

The certificates are made at test time with the ``openssl`` command line (the ``cryptography``
package is not a dependency): a CA, and a server certificate it signed for ``127.0.0.1`` and
``localhost``. No system store trusts the CA, so a client that verifies refuses the server
unless it is given ``ca.crt``, which is what the tests of ``verify_tls`` and ``ca_file`` need.

``TlsRedisServer`` is a ``RedisServer`` that also listens with TLS on ``tls_port`` and knows
ACL users given as ``--user`` lines; its plain port stays, for the readiness probe only.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from testkit.redis_procs import HOST, RedisServer, free_port

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

__all__ = ["AclUser", "TlsFiles", "TlsRedisServer", "make_tls_files"]

_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files: the CA's certificate, and the server's certificate and key."""

    ca_cert: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        """An SSL context for a test server presenting the certificate."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context


def _openssl(*args: str) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        raise RuntimeError("openssl is not installed (apt-get install openssl)")
    done = subprocess.run([binary, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {done.stderr.strip()[-500:]}")


def make_tls_files(directory: Path) -> TlsFiles:
    """A CA and a server certificate for 127.0.0.1 and localhost, valid for two days."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = directory / "ca.key", directory / "ca.crt"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.crt"
    _openssl(
        "req", "-x509", *_EC, "-days", "2", "-subj", "/CN=storm-notifier test CA",
        "-keyout", str(ca_key), "-out", str(ca_cert),
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    _openssl("req", "-new", *_EC, "-subj", f"/CN={HOST}", "-keyout", str(key), "-out", str(csr))
    extensions = directory / "server.ext"
    extensions.write_text(
        f"subjectAltName=IP:{HOST},DNS:localhost\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n",
        encoding="utf-8",
    )
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", "2", "-extfile", str(extensions), "-out", str(cert),
    )  # fmt: skip
    return TlsFiles(ca_cert=ca_cert, cert=cert, key=key)


@dataclass(frozen=True, slots=True)
class AclUser:
    """A Redis ACL user with a password and every permission."""

    name: str
    password: str

    def rule(self) -> list[str]:
        """The words of its ``--user`` line."""
        return [self.name, "on", f">{self.password}", "~*", "&*", "+@all"]


class TlsRedisServer(RedisServer):
    """A redis-server that also serves TLS on ``tls_port`` (no client certificates asked)."""

    def __init__(
        self, directory: Path, tls: TlsFiles, *, users: Sequence[AclUser] = (), **kwargs: Any
    ) -> None:
        super().__init__(directory, **kwargs)
        self.tls = tls
        self.users = tuple(users)
        self.tls_port = free_port()

    def tls_url(self, user: AclUser | None = None, *, password: str | None = None) -> str:
        """``rediss://[user:password@]127.0.0.1:TLS_PORT/0``."""
        auth = "" if user is None else f"{user.name}:{password or user.password}@"
        return f"rediss://{auth}{HOST}:{self.tls_port}/0"

    def command_line(self) -> list[str]:
        """The plain server's argv, plus TLS and the ACL users."""
        argv = super().command_line()
        argv += [
            "--tls-port", str(self.tls_port),
            "--tls-cert-file", str(self.tls.cert),
            "--tls-key-file", str(self.tls.key),
            "--tls-ca-cert-file", str(self.tls.ca_cert),
            "--tls-auth-clients", "no",
        ]  # fmt: skip
        for user in self.users:
            argv += ["--user", *user.rule()]
        return argv
