"""An app developer's TypeScript client, generated from the served /openapi.json
(openapi-typescript, openapi-fetch), compiled with `tsc --strict` and run against
`facilities run` (docs/api.md, "The OpenAPI document"): it calls every operation of the
document and reads the live stream's event union with no hand-written type (tests/ts)."""

import asyncio
import json
import shutil
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

from facilities import admin
from facilities.access import Role
from facilities.mosquitto import PrivateBroker
from facilities.site import load_site
from tests.support.npm import npm_tools
from tests.support.paths import EXAMPLE_SITE
from tests.support.processes import ServiceProcess

pytestmark = pytest.mark.slow

TS = Path(__file__).resolve().parent / "ts"
APP = "https://app.example.org"
TSCONFIG = {
    "compilerOptions": {
        "strict": True,
        "target": "ES2022",
        "module": "NodeNext",
        "moduleResolution": "NodeNext",
        "lib": ["ES2022", "DOM", "DOM.Iterable"],
        "types": ["node"],
        "skipLibCheck": True,
        "outDir": "out",
    },
    "files": ["client.ts"],
}


def _run(argv: list[str | Path], cwd: Path, timeout_s: float = 300) -> str:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout_s)
    assert done.returncode == 0, f"{argv[0]}: {done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done.stdout


def test_a_generated_typescript_client_calls_every_operation(
    broker: PrivateBroker, tmp_path: Path
) -> None:
    tools = npm_tools()
    site = tmp_path / "site.toml"
    # no device answers here: commands fail fast (504 with their command_id)
    text = EXAMPLE_SITE.read_text("utf-8")
    site.write_text(
        text.replace("[rules]\n", "[rules]\ncommand_timeout_s = 0.2\ncommand_tries = 1\n", 1)
    )
    db = tmp_path / "facilities.db"
    staff = asyncio.run(admin.add(db, Role.STAFF, "ts staff")).token
    resident = asyncio.run(
        admin.add(db, Role.RESIDENT, "ts resident", garages=("g-hc3",), site=load_site(site))
    ).token
    process = ServiceProcess(
        broker,
        db,
        client_id=f"ts-{uuid.uuid4().hex[:6]}",
        log=tmp_path / "service.log",
        site=site,
        extra=("--cors-origin", APP),
    ).start()
    base = f"http://127.0.0.1:{process.port}"
    build = tmp_path / "client"
    build.mkdir()
    try:
        shutil.copy(TS / "client.ts", build)
        (build / "node_modules").symlink_to(tools.parent)
        (build / "package.json").write_text('{"type": "module"}\n')
        (build / "tsconfig.json").write_text(json.dumps(TSCONFIG))
        _run([tools / "openapi-typescript", f"{base}/openapi.json", "-o", "api.d.ts"], build)
        _run([tools / "tsc", "-p", "."], build)
        # the heartbeat comes within 10 s when the district is quiet
        out = _run(["node", "out/client.js", base, staff, resident], build, timeout_s=60)
        seen = json.loads(out.strip().splitlines()[-1])

        document = httpx.get(f"{base}/openapi.json").json()
        operations = {
            op["operationId"] for item in document["paths"].values() for op in item.values()
        }
        assert set(seen["calls"]) == operations
        assert seen["problems"] == []
        assert seen["calls"]["open_gate"] == 504 and seen["calls"]["power"] == 504
        assert seen["calls"]["garage"] == seen["calls"]["acknowledge"] == 404
        assert any(e.startswith("event heartbeat") for e in seen["events"]), seen["events"]

        # a browser app of the configured origin passes its preflight over a real socket
        preflight = httpx.options(
            f"{base}/api/garages/g-hc3/gates/north/open",
            headers={
                "Origin": APP,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,idempotency-key",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == APP
    finally:
        process.terminate()
