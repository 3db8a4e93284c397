"""docs/operations.md, "Installing on a server" and "TLS to the broker", as written: the blocks
marked `tested` run with the real files (in a scratch directory instead of /etc), the broker
starts as its unit says (as the mosquitto user), and the service and a device connect to it,
over TLS too; the units pass `systemd-analyze verify`; the nginx file passes `nginx -t` and,
running in front of a service, serves the residents' paths and nothing else on their name."""

import os
import pwd
import re
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from facilities.errors import BrokerAuthError, BrokerTlsError
from facilities.mosquitto import PrivateBroker, free_port
from facilities.mqtt.broker_url import BrokerUrl
from facilities.mqtt.topics import Topics
from simulators.client import DeviceClient
from tests.support.paths import ROOT
from tests.support.poll import wait_until
from tests.support.processes import ServiceProcess, run_cli, wait_http
from tests.support.tls import Certificates, make_ca, make_certificates

DOC = ROOT / "docs" / "operations.md"
UNITS = ROOT / "deploy" / "systemd"
NGINX_SITE = ROOT / "deploy" / "nginx" / "facilities.conf"
# What the doc installs to /opt/facilities/.venv: this checkout's environment.
FACILITIES = Path(sys.executable).parent / "facilities"
BROKER_USER = "mosquitto"


def documented(name: str) -> str:
    """The shell block of docs/operations.md marked `<!-- tested: name -->`."""
    text = DOC.read_text(encoding="utf-8")
    after = text.split(f"<!-- tested: {name} -->\n", 1)[1]
    body = after.split("```sh\n", 1)[1].split("```", 1)[0]
    return textwrap.dedent(body)


@dataclass
class Host:
    """A scratch directory standing for the server's `/`, and the files the doc names."""

    root: Path

    def moves(self) -> dict[str, str]:
        return {
            "/opt/facilities/.venv/bin/facilities": str(FACILITIES),
            "/opt/facilities/src": str(ROOT),
            "/etc/mosquitto/facilities": f"{self.root}/etc/mosquitto/facilities",
            "/etc/facilities": f"{self.root}/etc/facilities",
            "/etc/systemd/system": f"{self.root}/etc/systemd/system",
            "/var/lib/facilities-broker": f"{self.root}/var/lib/facilities-broker",
        }

    def moved(self, text: str, extra: dict[str, str] | None = None) -> str:
        """`text` with the doc's paths moved into the scratch directory (one pass)."""
        moves = {**self.moves(), **(extra or {})}
        pattern = "|".join(re.escape(path) for path in sorted(moves, key=len, reverse=True))
        return re.sub(pattern, lambda found: moves[found[0]], text)

    def run(self, block: str, extra: dict[str, str] | None = None) -> None:
        """Run the documented block `block` as root would, in bash, stopping at an error."""
        script = self.moved(documented(block), extra)
        environment = {k: v for k, v in os.environ.items() if not k.startswith("FACILITIES_")}
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=environment,
            cwd=self.root,
        )
        assert done.returncode == 0, f"{script}\n{done.stdout}\n{done.stderr}"

    @property
    def broker_dir(self) -> Path:
        return self.root / "etc" / "mosquitto" / "facilities"

    def credentials(self) -> dict[str, str]:
        text = (self.broker_dir / "credentials.new").read_text()
        return dict(re.findall(r'^(\S+) = "(.*)"$', text, re.M))

    def environment_file(self) -> dict[str, str]:
        """The service's variables as block 5 wrote them (systemd's EnvironmentFile)."""
        text = (self.root / "etc" / "facilities" / "env").read_text()
        return dict(
            line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#")
        )


@pytest.fixture
def host() -> Iterator[Host]:
    if os.geteuid() != 0:
        pytest.skip("needs root: the broker runs as the mosquitto user, as its unit says")
    try:
        pwd.getpwnam(BROKER_USER)
    except KeyError:
        pytest.skip("no mosquitto user: apt-get install mosquitto")
    # not under pytest's own directory (mode 0700): the mosquitto user must reach the files
    root = Path(tempfile.mkdtemp(prefix="facilities-install-"))
    root.chmod(0o755)
    for directory in ("etc/facilities", "etc/mosquitto", "etc/systemd/system"):
        (root / directory).mkdir(parents=True)  # step 1 of the doc, and what Debian has
    try:
        yield Host(root)
    finally:
        shutil.rmtree(root)


@dataclass
class Broker:
    process: subprocess.Popen[bytes]
    port: int  # `listener 1883`, moved
    tls_port: int  # `listener 8883`, moved (when uncommented)
    log: Path

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def start_as_the_unit(host: Host) -> Broker:
    """Mosquitto as facilities-broker.service starts it (its ExecStart, as its User= and
    Group=), with the listeners moved to free loopback ports and the state directory (its
    StateDirectory=) in the scratch directory."""
    unit = (host.root / "etc/systemd/system/facilities-broker.service").read_text()
    settings = dict(re.findall(r"^(\w+)=(.*)$", unit, re.M))
    user = pwd.getpwnam(settings["User"])
    assert settings["Group"] == BROKER_USER
    state = host.root / "var" / "lib" / settings["StateDirectory"]
    state.mkdir(parents=True, mode=0o700)
    os.chown(state, user.pw_uid, user.pw_gid)

    conf = host.broker_dir / "mosquitto.conf"
    text = conf.read_text()
    assert f"persistence_location /var/lib/{settings['StateDirectory']}/\n" in text
    text = host.moved(text)  # the password file, the ACL, the state, the certificate
    port, tls_port = free_port(), free_port()
    assert "\nlistener 1883\n" in text
    text = text.replace("\nlistener 1883\n", f"\nlistener {port} 127.0.0.1\n")
    text = text.replace("\nlistener 8883\n", f"\nlistener {tls_port} 127.0.0.1\n")
    conf.write_text(text)

    argv = shlex.split(host.moved(settings["ExecStart"]))
    log = host.root / "broker.log"

    def as_the_unit_user() -> None:
        os.setgid(user.pw_gid)
        os.setgroups([user.pw_gid])
        os.setuid(user.pw_uid)

    with log.open("wb") as output:
        process = subprocess.Popen(
            argv, stdout=output, stderr=subprocess.STDOUT, preexec_fn=as_the_unit_user
        )

    def listening() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"mosquitto exited: {log.read_text()}")
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    wait_until(listening, timeout_s=10, what="the broker listening")
    return Broker(process, port, tls_port, log)


def _mode(path: Path) -> tuple[int, str, str]:
    info = path.stat()
    owner = pwd.getpwuid(info.st_uid).pw_name
    import grp

    return info.st_mode & 0o777, owner, grp.getgrgid(info.st_gid).gr_name


class Service:
    """`facilities run` with the environment file of block 5, its ports moved."""

    def __init__(self, host: Host, broker_url: str, **variables: str) -> None:
        self.port = free_port()
        self.environment = {
            **host.environment_file(),
            "FACILITIES_SITE": host.moved("/etc/facilities/site.toml"),
            "FACILITIES_BROKER": broker_url,
            "FACILITIES_DB": str(host.root / "facilities.db"),
            "FACILITIES_LISTEN": f"127.0.0.1:{self.port}",
            "FACILITIES_CONNECT_TIMEOUT": "5",
            **variables,
        }
        self.log = host.root / "service.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> "Service":
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("FACILITIES_")}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "facilities", "run"],
                stdout=log,
                stderr=log,
                env={**inherited, **self.environment},
            )
        try:
            wait_http(self.port, timeout_s=30)
        except AssertionError:
            raise AssertionError(self.log.read_text()[-2000:]) from None
        return self

    def station(self, station: str) -> dict[str, object]:
        answer = httpx.get(f"http://127.0.0.1:{self.port}/api/stations/{station}", timeout=5)
        body: dict[str, object] = answer.json()
        return body

    def stop(self) -> None:
        assert self.process is not None
        self.process.terminate()
        assert self.process.wait(15) == 0


def _device_comes_online(service: Service, url: BrokerUrl, station: str = "cs-01") -> None:
    availability = Topics().station(station, "availability")
    client = DeviceClient(url, client_id=station, availability_topic=availability).connect()
    try:
        wait_until(lambda: service.station(station)["online"], timeout_s=15, what="online")
    finally:
        client.close()


def _install(host: Host) -> None:
    """Blocks 3, 4 and 5 of the doc."""
    host.run("site")
    host.run("broker")
    host.run("service")


@pytest.mark.slow
def test_the_documented_install_runs_the_broker_as_mosquitto_for_the_service_and_devices(
    host: Host,
) -> None:
    _install(host)
    # what the broker reads is its group's to read, and nobody else's
    assert _mode(host.broker_dir) == (0o750, "root", BROKER_USER)
    for name in ("passwd", "acl"):
        assert _mode(host.broker_dir / name) == (0o640, "root", BROKER_USER)
    assert _mode(host.broker_dir / "credentials.new") == (0o600, "root", "root")
    assert _mode(host.root / "etc/facilities/env")[0] == 0o600
    passwords = host.credentials()
    environment = host.environment_file()
    assert (
        f"mqtt://facilities:{passwords['facilities']}@127.0.0.1:1883"
        == (environment["FACILITIES_BROKER"])
    )

    broker = start_as_the_unit(host)
    try:
        url = environment["FACILITIES_BROKER"].replace(":1883", f":{broker.port}")
        service = Service(host, url).start()
        try:
            assert httpx.get(f"http://127.0.0.1:{service.port}/healthz").json()["broker"] == "ok"
            device = BrokerUrl("127.0.0.1", broker.port, "cs-01", passwords["cs-01"])
            _device_comes_online(service, device)
            wrong = BrokerUrl("127.0.0.1", broker.port, "cs-02", passwords["cs-01"])
            with pytest.raises(BrokerAuthError):
                DeviceClient(wrong, client_id="cs-02").connect()
        finally:
            service.stop()
    finally:
        broker.stop()


@pytest.mark.slow
def test_tls_to_the_broker_as_documented(host: Host) -> None:
    """A throwaway CA signs the broker's certificate; the TLS block of the doc puts it in
    place and opens the listener; the service (mqtts:// and --broker-ca) and a device connect
    over TLS; with another CA the service says so in one line and stops."""
    _install(host)
    certificates: Certificates = make_certificates(host.root / "made-by-your-ca")
    host.run(
        "tls",
        {
            "broker.example.cn.crt": str(certificates.cert),
            "broker.example.cn.key": str(certificates.key),
        },
    )
    tls = host.broker_dir / "tls"
    assert _mode(tls) == (0o750, "root", BROKER_USER)
    assert _mode(tls / "server.key") == (0o640, "root", BROKER_USER)
    conf = (host.broker_dir / "mosquitto.conf").read_text()
    assert conf.count("\nuse_username_as_clientid true\n") == 2  # one for each listener

    passwords = host.credentials()
    broker = start_as_the_unit(host)
    try:
        wait_until(
            lambda: socket.create_connection(("127.0.0.1", broker.tls_port), timeout=1),
            timeout_s=10,
            ignoring=(OSError,),
            what="the TLS listener",
        )
        url = f"mqtts://facilities:{passwords['facilities']}@127.0.0.1:{broker.tls_port}"
        service = Service(host, url, FACILITIES_BROKER_CA=str(certificates.ca)).start()
        try:
            health = httpx.get(f"http://127.0.0.1:{service.port}/healthz").json()
            assert health["broker"] == "ok"
            device = BrokerUrl(
                "127.0.0.1",
                broker.tls_port,
                "cs-01",
                passwords["cs-01"],
                tls=True,
                ca_file=str(certificates.ca),
            )
            _device_comes_online(service, device)
        finally:
            service.stop()

        other_ca, _ = make_ca(host.root / "another-ca", "someone else's CA")
        refused = run_cli(
            "run",
            variables={
                **Service(host, url).environment,
                "FACILITIES_BROKER_CA": str(other_ca),
                "FACILITIES_DB": str(host.root / "other.db"),
            },
        )
        assert refused.returncode == 1, refused.stderr
        assert "Traceback" not in refused.stderr
        said = [line for line in refused.stderr.splitlines() if line.startswith("facilities:")]
        assert said == [
            f"facilities: broker mqtts://facilities@127.0.0.1:{broker.tls_port}: its TLS"
            " certificate is not trusted (unable to get local issuer certificate), checked"
            f" against --broker-ca {other_ca}: give the CA that signed the broker's certificate"
        ]
        assert refused.stderr.splitlines()[-1] == said[0]
        # a device with the wrong CA is refused as plainly
        wrong = BrokerUrl(
            "127.0.0.1", broker.tls_port, "cs-02", passwords["cs-02"], tls=True,
            ca_file=str(other_ca),
        )  # fmt: skip
        with pytest.raises(BrokerTlsError, match="its TLS certificate is not trusted"):
            DeviceClient(wrong, client_id="cs-02").connect()
    finally:
        broker.stop()


@pytest.mark.slow
def test_a_missing_ca_file_is_one_line(tmp_path: Path) -> None:
    refused = run_cli(
        "run",
        "--broker",
        f"mqtts://127.0.0.1:{free_port()}",
        "--broker-ca",
        str(tmp_path / "nowhere.crt"),
        "--db",
        str(tmp_path / "f.db"),
        "--connect-timeout",
        "1",
    )
    assert refused.returncode == 1
    assert "Traceback" not in refused.stderr
    assert refused.stderr.splitlines()[-1] == (
        f"facilities: --broker-ca {tmp_path / 'nowhere.crt'}: cannot read a CA certificate"
        " from it: No such file or directory"
    )


def test_the_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is missing (Debian's systemd package)")
    for unit in ("facilities.service", "facilities-broker.service"):
        text = (UNITS / unit).read_text()
        # the unit's program, where this checkout has it (verify checks it is executable)
        text = text.replace("/opt/facilities/.venv/bin/facilities", str(FACILITIES))
        (tmp_path / unit).write_text(text)
        done = subprocess.run(
            [analyze, "verify", str(tmp_path / unit)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert done.stderr == "", done.stderr  # an unknown key is only a warning there


# --- the reverse proxy ----------------------------------------------------------------------

PUBLIC = "bikes.example.cn"
STAFF = "staff.bikes.example.cn"


@dataclass
class Nginx:
    directory: Path
    http: int
    https: int
    certificates: Certificates

    def config(self, service_port: int) -> Path:
        """deploy/nginx/facilities.conf in a main config of its own, as Debian's includes it
        (inside `http`), with its ports, certificate and upstream moved."""
        text = NGINX_SITE.read_text()
        for old, new in (
            ("listen 80;", f"listen 127.0.0.1:{self.http};"),
            ("listen 443 ssl http2;", f"listen 127.0.0.1:{self.https} ssl http2;"),
            ("/etc/ssl/facilities/bikes.example.cn.crt", str(self.certificates.cert)),
            ("/etc/ssl/facilities/bikes.example.cn.key", str(self.certificates.key)),
            ("server 127.0.0.1:8000;", f"server 127.0.0.1:{service_port};"),
        ):
            assert old in text, old
            text = text.replace(old, new)
        (self.directory / "facilities.conf").write_text(text)
        d = self.directory
        user = "user root root;\n" if os.geteuid() == 0 else ""
        main = (
            f"{user}daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\n"
            f"error_log {d}/error.log;\nevents {{ worker_connections 64; }}\n"
            f"http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n"
            f"  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n"
            f"  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n"
            f"  include {d}/facilities.conf;\n}}\n"
        )
        (d / "nginx.conf").write_text(main)
        return d / "nginx.conf"


def _nginx_binary() -> str:
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if found is None:
        pytest.skip("nginx is missing: make system-tests installs Debian's nginx")
    return found


@pytest.fixture
def nginx(tmp_path: Path) -> Nginx:
    return Nginx(tmp_path, free_port(), free_port(), make_certificates(tmp_path / "tls"))


def test_nginx_accepts_the_shipped_site(nginx: Nginx) -> None:
    conf = nginx.config(8000)
    done = subprocess.run(
        [_nginx_binary(), "-t", "-p", str(nginx.directory), "-c", str(conf), "-e", "stderr"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "test is successful" in done.stderr


# The residents' side: what the pages, their scripts and the residents' app ask for.
PUBLIC_PATHS = [
    "/",
    "/stations/cs-01",
    "/garages/g-cq4",
    "/stations/cs-01/qr.svg",
    "/static/app.css",
    "/static/live.js",
    "/api/communities",
    "/api/stations",
    "/api/stations/cs-01",
    "/api/garages",
    "/api/garages/g-cq4",
]
# Never there: the operators' and the staff's.
STAFF_PATHS = [
    ("GET", "/metrics"),
    ("GET", "/docs"),
    ("GET", "/docs-assets/swagger-ui.css"),
    ("GET", "/openapi.json"),
    ("GET", "/healthz"),
    ("GET", "/staff"),
    ("GET", "/static/../staff"),
    ("GET", "/qr"),
    ("GET", "/api/alerts"),
    ("POST", "/api/alerts/1/ack"),
    ("GET", "/api/cutoffs"),
    ("GET", "/api/audit"),
    ("GET", "/api/stations/cs-01/sessions"),
    ("GET", "/api/stations/cs-01/telemetry"),
    ("POST", "/api/stations/cs-01/ports/1/power"),
]


@pytest.mark.slow
def test_nginx_serves_the_residents_side_and_keeps_the_rest_to_the_office(
    nginx: Nginx, broker: PrivateBroker, tmp_path: Path
) -> None:
    service = ServiceProcess(
        broker,
        tmp_path / "facilities.db",
        client_id="facilities-nginx",
        log=tmp_path / "service.log",
        extra=("--trusted-proxy", "127.0.0.1", "--public-url", f"https://{PUBLIC}"),
    ).start()
    conf = nginx.config(service.port)
    process = subprocess.Popen(
        [_nginx_binary(), "-p", str(nginx.directory), "-c", str(conf), "-e", "stderr"],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "nginx.log").open("wb"),
    )
    trusted = ssl.create_default_context(cafile=str(nginx.certificates.ca))
    base = f"https://127.0.0.1:{nginx.https}"
    try:
        with httpx.Client(verify=trusted, timeout=10) as client:
            wait_until(
                lambda: client.get(f"{base}/", headers={"Host": PUBLIC}),
                timeout_s=10,
                ignoring=(httpx.HTTPError,),
                what="nginx",
            )
            for path in PUBLIC_PATHS:
                answer = client.get(f"{base}{path}", headers={"Host": PUBLIC})
                assert answer.status_code == 200, (path, answer.status_code)
            # the residents' API is the service's: its own refusal, not the proxy's
            me = client.get(f"{base}/api/me", headers={"Host": PUBLIC})
            assert me.status_code == 401 and me.json()["error"] == "unauthorized"
            gate = client.post(
                f"{base}/api/garages/g-cq4/gates/north/open", headers={"Host": PUBLIC}
            )
            assert gate.status_code == 401 and gate.json()["error"] == "unauthorized"
            with client.stream("GET", f"{base}/api/events", headers={"Host": PUBLIC}) as live:
                assert live.status_code == 200
                assert next(live.iter_text()).startswith("retry:")
            for method, path in STAFF_PATHS:
                answer = client.request(method, f"{base}{path}", headers={"Host": PUBLIC})
                assert answer.status_code == 404, (method, path, answer.status_code)
                assert "nginx" in answer.text, (path, answer.text)  # the proxy's, not ours
            # the staff's name, from the office's network (here loopback): everything
            for path in ("/staff", "/metrics", "/docs", "/healthz", "/"):
                answer = client.get(f"{base}{path}", headers={"Host": STAFF})
                assert answer.status_code == 200, (path, answer.status_code)
            # plain HTTP is sent to HTTPS
            plain = httpx.get(f"http://127.0.0.1:{nginx.http}/x", headers={"Host": PUBLIC})
            assert plain.status_code == 301
            assert plain.headers["location"] == f"https://{PUBLIC}/x"
        # from another address than the office's: refused on the staff's name
        elsewhere = httpx.HTTPTransport(verify=trusted, local_address="127.0.0.2")
        with httpx.Client(transport=elsewhere, timeout=10) as client:
            assert client.get(f"{base}/staff", headers={"Host": STAFF}).status_code == 403
            assert client.get(f"{base}/", headers={"Host": PUBLIC}).status_code == 200
    finally:
        process.terminate()
        process.wait(10)
        service.terminate()
