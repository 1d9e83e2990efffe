"""A real Orthanc PACS with its DICOMweb plugin, started for a test on a free localhost port.

Debian's ``orthanc`` and ``orthanc-dicomweb`` packages (``.ci/run`` installs them). The server
gets a config of its own in a temporary folder (storage there too, DICOM networking off, HTTP
basic authentication on) and is stopped at the end. With ``tls=True`` it sits behind nginx
terminating HTTPS with a self-signed certificate, as Orthanc's own documentation recommends for
hospitals (and because the built-in HTTPS of Debian 12's Orthanc 1.10 drops every connection
with OpenSSL 3). When a binary or the plugin is missing, or a server does not come up, the test
is skipped with the reason (and the server's log).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

PLUGIN_PLACES = (
    Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so"),
    *sorted(Path("/usr/lib/orthanc").glob("libOrthancDicomWeb.so*")),
)
USER = "cxr-test"


@dataclass(frozen=True)
class Orthanc:
    """A running server: its DICOMweb root, its REST root and the credentials it accepts."""

    dicomweb: str
    rest: str
    user: str
    password: str
    certificate: Path | None = None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _certificate(folder: Path) -> Path:
    """A self-signed certificate for 127.0.0.1 (key and certificate in one PEM, as Orthanc wants)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make a test TLS certificate")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
        + ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True,
        capture_output=True,
    )
    return cert


NGINX_CONFIG = """
user root;
worker_processes 1;
daemon off;
pid {folder}/nginx.pid;
error_log {folder}/nginx-error.log;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {folder}/body;
  proxy_temp_path {folder}/proxy;
  fastcgi_temp_path {folder}/fastcgi;
  uwsgi_temp_path {folder}/uwsgi;
  scgi_temp_path {folder}/scgi;
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {folder}/cert.pem;
    ssl_certificate_key {folder}/key.pem;
    client_max_body_size 512m;
    location / {{
      proxy_pass http://127.0.0.1:{upstream};
      proxy_http_version 1.1;
      proxy_request_buffering off;
    }}
  }}
}}
"""


@contextmanager
def _tls_proxy(folder: Path, upstream: int) -> Iterator[int]:
    """nginx on a free port terminating HTTPS in front of ``upstream``; yields its port."""
    binary = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if binary is None:
        pytest.skip(
            "nginx is not installed (apt-get install nginx-light): no HTTPS in front of Orthanc"
        )
    port = _free_port()
    (folder / "nginx.conf").write_text(
        NGINX_CONFIG.format(folder=folder, port=port, upstream=upstream)
    )
    with (folder / "nginx.log").open("w") as handle:
        proc = subprocess.Popen(
            [binary, "-c", str(folder / "nginx.conf"), "-p", str(folder)],
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
        try:
            yield port
        finally:
            _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait(orthanc: Orthanc, proc: subprocess.Popen, log: Path, timeout_s: float = 60.0) -> None:
    import ssl

    context = (
        ssl.create_default_context(cafile=str(orthanc.certificate)) if orthanc.certificate else None
    )
    request = urllib.request.Request(f"{orthanc.rest}/system")
    manager = urllib.request.HTTPPasswordMgrWithDefaultRealm()
    manager.add_password(None, orthanc.rest, orthanc.user, orthanc.password)
    opener = urllib.request.build_opener(
        urllib.request.HTTPBasicAuthHandler(manager), urllib.request.HTTPSHandler(context=context)
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.skip(
                f"Orthanc exited at start (code {proc.returncode}): {log.read_text()[-800:]}"
            )
        try:
            with opener.open(request, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    pytest.skip(f"Orthanc did not answer within {timeout_s:.0f} s: {log.read_text()[-800:]}")


@contextmanager
def running_orthanc(folder: Path, password: str, *, tls: bool = False) -> Iterator[Orthanc]:
    """Start ``Orthanc config.json`` in ``folder``; yield it running; stop it."""
    binary = shutil.which("Orthanc") or next(
        (p for p in ("/usr/sbin/Orthanc", "/usr/bin/Orthanc") if Path(p).exists()), None
    )
    plugin = next((p for p in PLUGIN_PLACES if p.exists()), None)
    if binary is None or plugin is None:
        pytest.skip(
            "Orthanc or its DICOMweb plugin is not installed (apt-get install orthanc orthanc-dicomweb)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    config = {
        "Name": "cxr-test",
        "StorageDirectory": str(folder / "db"),
        "IndexDirectory": str(folder / "db"),
        "HttpPort": port,
        "DicomServerEnabled": False,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {USER: password},
        "Plugins": [str(plugin)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "HttpThreadsCount": 4,
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    log = folder / "orthanc.log"
    with log.open("w") as handle:
        proc = subprocess.Popen(
            [binary, str(folder / "config.json")],
            cwd=folder,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
        try:
            if not tls:
                server = _server(f"http://127.0.0.1:{port}", password)
                _wait(server, proc, log)
                yield server
                return
            certificate = _certificate(folder)
            with _tls_proxy(folder, port) as proxy:
                server = _server(f"https://127.0.0.1:{proxy}", password, certificate)
                _wait(server, proc, folder / "nginx-error.log")
                yield server
        finally:
            _stop(proc)


def _server(root: str, password: str, certificate: Path | None = None) -> Orthanc:
    return Orthanc(
        dicomweb=f"{root}/dicom-web",
        rest=root,
        user=USER,
        password=password,
        certificate=certificate,
    )
