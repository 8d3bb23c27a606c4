"""The bytes a worker holds for photos (fetched, waiting, being decoded) stay within a budget derived from
its memory limit: at the production caps, measured as peak RSS of a real worker process."""

from __future__ import annotations

import asyncio
import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread

import pytest

from stream.budget import ByteBudget
from stream.settings import DECODE_BYTES_PER_PIXEL, Settings, SettingsError

MIB = 1024 * 1024
GIB = 1024 * MIB


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


# -- the budget itself ---------------------------------------------------------------------------------------
def test_holders_wait_first_come_first_served_until_their_bytes_fit():
    async def main():
        budget = ByteBudget(100)
        order = []

        async def holder(name: str, n: int, release: asyncio.Event) -> None:
            async with budget.hold(n):
                order.append(name)
                await release.wait()

        releases = {name: asyncio.Event() for name in "abcd"}
        tasks = [asyncio.ensure_future(holder(n, size, releases[n])) for n, size in
                 (("a", 60), ("b", 50), ("c", 10), ("d", 40))]  # fmt: skip
        await asyncio.sleep(0.05)
        assert order == ["a"] and budget.held == 60  # c would fit, but b came first: no overtaking
        releases["a"].set()
        await asyncio.sleep(0.05)
        assert order == ["a", "b", "c", "d"] and budget.held == 100
        for event in releases.values():
            event.set()
        await asyncio.gather(*tasks)
        assert budget.held == 0

    run(main())


def test_a_hold_shrinks_to_what_was_fetched_and_a_cancelled_waiter_leaks_nothing():
    async def main():
        budget = ByteBudget(100)
        async with budget.hold(100) as held:
            waiter = asyncio.ensure_future(budget.hold(30).__aenter__())
            await asyncio.sleep(0.01)
            assert not waiter.done()
            waiter.cancel()
            held.shrink(20)  # the photo turned out to be 20 bytes: the rest is free for others at once
            assert budget.held == 20
            async with budget.hold(80):
                assert budget.held == 100
        assert budget.held == 0
        with pytest.raises(ValueError, match="never fit"):
            async with budget.hold(101):
                pass

    run(main())


# -- the settings it comes from ------------------------------------------------------------------------------
def test_the_fetch_budget_is_what_the_memory_limit_leaves_after_the_process_and_the_decode_threads():
    s = Settings()
    per_decode = DECODE_BYTES_PER_PIXEL * s.max_image_pixels + s.max_image_bytes
    assert s.fetch_budget_bytes == s.memory_limit_bytes - 512 * MIB - s.decode_threads * per_decode
    assert s.fetch_budget_bytes >= s.max_image_bytes  # the defaults fit the Deployment's 2 GiB
    assert Settings.from_env({"DARKROOM_MEMORY_LIMIT_BYTES": str(4 * GIB)}).fetch_budget_bytes == (
        s.fetch_budget_bytes + 2 * GIB
    )


def test_a_memory_limit_too_small_for_one_photo_is_refused_naming_what_to_change():
    with pytest.raises(SettingsError, match="DARKROOM_MEMORY_LIMIT_BYTES.*DARKROOM_DECODE_THREADS"):
        Settings.from_env({"DARKROOM_MEMORY_LIMIT_BYTES": str(1 * GIB)})
    with pytest.raises(SettingsError, match="DARKROOM_MEMORY_LIMIT_BYTES"):
        Settings.from_env({"DARKROOM_DECODE_THREADS": "4"})  # 4 decodes of 50 Mpx do not fit 2 GiB
    assert Settings.from_env({"DARKROOM_DECODE_THREADS": "4", "DARKROOM_MEMORY_LIMIT_BYTES": str(4 * GIB)})


# -- measured: a real worker's fetch + decode path at the production caps -----------------------------------
def rgba_png(width: int, height: int) -> bytes:
    """A transparent RGBA PNG of ``width`` x ``height``: small on the wire, 4 bytes a pixel decoded."""
    row = b"\x00" * (width * 4 + 1)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


WORKER = textwrap.dedent("""
    import asyncio, json, sys
    from stream.tagging import BatchTagger
    from contracts.records import parse_upload
    from contracts.tensors import ModelInput
    from stream.settings import Settings

    def status(field):
        for line in open("/proc/self/status"):
            if line.startswith(field):
                return int(line.split()[1]) * 1024

    async def main(base, names):
        settings = Settings(allow_loopback_http=True, fetch_timeout_s=120, decode_timeout_s=300)
        tagger = BatchTagger(settings, None)
        uploads = [parse_upload(json.dumps({"photo_id": n, "url": f"{base}/{n}", "uploaded_at": "2026-01-01T00:00:00Z"}).encode()) for n in names]
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # the high-water mark starts again from here: the worker, set up and idle
        base_rss = status("VmRSS")
        results = await asyncio.gather(*(tagger._load_remote(u, ModelInput(224, 224, 8)) for u in uploads),
                                       return_exceptions=True)
        failed = [repr(r) for r in results if isinstance(r, BaseException)]
        print(json.dumps({"peak": status("VmHWM") - base_rss, "failed": failed}))

    asyncio.run(main(sys.argv[1], sys.argv[2:]))
""")


@pytest.fixture(scope="module")
def photo_server():
    """25 MiB bodies (the production byte cap): 50 Mpx RGBA PNGs (the pixel cap), and small PNGs padded."""
    size = 25 * MIB
    big = rgba_png(10_000, 5_000)
    small = rgba_png(64, 48)
    bodies = {"big": big + b"\x00" * (size - len(big)), "small": small + b"\x00" * (size - len(small))}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            body = bodies[self.path.strip("/").split("-")[0]]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
            except OSError:
                pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_peak_memory_of_fetch_and_decode_at_the_production_caps_stays_within_the_budget(photo_server):
    """4 photos of 50 Mpx RGBA and 36 more of 25 MiB each, all at once: 1 GB of bodies plus decodes of
    200 MB each. A 2 GiB pod leaves its photos 2 GiB - 512 MiB; the worker must stay under that."""
    names = [f"big-{i}" for i in range(4)] + [f"small-{i}" for i in range(36)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run([sys.executable, "-c", WORKER, photo_server, *names], env=env, capture_output=True,
                          text=True, timeout=540)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["failed"] == []
    budget = 2 * GIB - 512 * MIB
    assert result["peak"] < budget, (
        f"peak {result['peak'] / MIB:.0f} MiB over an idle worker, budget {budget / MIB:.0f}"
    )
