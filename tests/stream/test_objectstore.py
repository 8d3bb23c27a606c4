"""``s3://`` photos against a real S3-protocol server (moto's standalone server on 127.0.0.1, as s3fs tests
itself) and, for what a well-behaved store never does (trickling, lying, stalling), a hostile local server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler

import botocore.session
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto.server import ThreadedMotoServer
from PIL import Image

from contracts.records import ErrorCode, PermanentError, SourceUnavailable
from stream.fetch import fetch
from stream.objectstore import ListingError, S3Options, list_s3_photos, parse_s3_url, read_s3
from stream.settings import SettingsError
from tests.e2e.bad_inputs import HostileHTTP, encode

PHOTO = encode(Image.new("RGB", (64, 48), (200, 30, 30)), "JPEG")
MB = 1024 * 1024


@pytest.fixture(scope="module", autouse=True)
def aws_test_credentials():
    """Fake credentials through the standard chain (environment): nothing reaches AWS or instance metadata."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        yield


@pytest.fixture(scope="module")
def moto_url(aws_test_credentials):
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="module")
def store(moto_url):
    """A plain botocore client on the moto server, with bucket ``photos`` holding a photo and a large object."""
    client = botocore.session.get_session().create_client(
        "s3", endpoint_url=moto_url, region_name="us-east-1"
    )
    client.create_bucket(Bucket="photos")
    client.create_bucket(Bucket="elsewhere")
    client.put_object(Bucket="photos", Key="2026/red.jpg", Body=PHOTO)
    client.put_object(Bucket="photos", Key="big.jpg", Body=b"\xff" * (3 * MB))
    client.put_object(Bucket="elsewhere", Key="red.jpg", Body=PHOTO)
    return client


@pytest.fixture(scope="module")
def options(moto_url) -> S3Options:
    return S3Options(endpoint_url=moto_url, allowed_buckets=frozenset({"photos", "missing-bucket"}))


class HostileS3(HostileHTTP):
    """The hostile web server of the input-safety tests, addressed path-style as bucket ``hostile``, plus the
    error answers S3 gives when it throttles or refuses."""

    def route(self, h: BaseHTTPRequestHandler, path: str, query: str) -> None:
        path = path.removeprefix("/hostile")
        if path == "/throttled":
            self._send(
                h,
                503,
                b"<Error><Code>SlowDown</Code><Message>Reduce your rate</Message></Error>",
                "application/xml",
            )
        elif path == "/denied":
            self._send(
                h,
                403,
                b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>",
                "application/xml",
            )
        elif path == "/stall":  # accepts, never answers
            time.sleep(5)
        else:
            super().route(h, path, query)


@pytest.fixture(scope="module")
def hostile():
    server = HostileS3(PHOTO)
    yield S3Options(endpoint_url=server.base, allowed_buckets=frozenset({"hostile"}), addressing_style="path")
    server.close()


def code_of(call) -> str:
    with pytest.raises(PermanentError) as err:
        call()
    return str(err.value.code)


def test_an_object_in_an_allowed_bucket_is_read(store, options):
    assert read_s3("s3://photos/2026/red.jpg", options, max_bytes=MB, timeout_s=5) == PHOTO


def test_a_missing_key_or_bucket_is_not_found(store, options):
    assert code_of(lambda: read_s3("s3://photos/nope.jpg", options, MB, 5)) == ErrorCode.NOT_FOUND
    assert code_of(lambda: read_s3("s3://missing-bucket/a.jpg", options, MB, 5)) == ErrorCode.NOT_FOUND


def test_no_allowed_buckets_forbid_every_s3_url_and_others_stay_unread(store, moto_url):
    assert code_of(lambda: read_s3("s3://photos/2026/red.jpg", S3Options(endpoint_url=moto_url), MB, 5)) == (
        ErrorCode.FORBIDDEN_URL
    )
    only_photos = S3Options(endpoint_url=moto_url, allowed_buckets=frozenset({"photos"}))
    assert code_of(lambda: read_s3("s3://elsewhere/red.jpg", only_photos, MB, 5)) == ErrorCode.FORBIDDEN_URL


@pytest.mark.parametrize(
    "url",
    ["s3://photos", "s3://photos/", "s3:/photos/a.jpg", "http://photos/a.jpg", "s3://photos/a/../../elsewhere/red.jpg",
     "s3://photos/./a.jpg", "s3://photos/a\x00.jpg", "s3://photos/a\nb.jpg", "s3://photos/" + "k" * 1025,
     "s3://photos/\ud800.jpg", "s3://Photos/2026/red.jpg", "s3://photos@elsewhere/red.jpg"],
)  # fmt: skip
def test_malformed_urls_are_forbidden(store, options, url):
    assert code_of(lambda: read_s3(url, options, MB, 5)) == ErrorCode.FORBIDDEN_URL


def test_a_declared_size_over_the_cap_is_refused_before_the_body(store, options, hostile):
    assert code_of(lambda: read_s3("s3://photos/big.jpg", options, MB, 5)) == ErrorCode.TOO_LARGE
    started = time.monotonic()  # declares 10**12 bytes, sends 2: reading it would wait out the deadline
    assert code_of(lambda: read_s3("s3://hostile/declared-huge", hostile, MB, 5)) == ErrorCode.TOO_LARGE
    assert time.monotonic() - started < 2.5


def test_a_body_without_length_is_cut_off_past_the_cap(hostile):
    started = time.monotonic()  # never ends: only the cap can stop it
    assert code_of(lambda: read_s3("s3://hostile/endless", hostile, MB, 10)) == ErrorCode.TOO_LARGE
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("key", ["trickle", "stall"])
def test_one_deadline_covers_a_trickling_or_silent_store(hostile, key):
    started = time.monotonic()
    with pytest.raises(SourceUnavailable):
        read_s3(f"s3://hostile/{key}", hostile, MB, timeout_s=1.0)
    assert time.monotonic() - started < 2.5  # the trickle would take 20 s, the stall 5 s


def test_throttling_is_worth_a_retry_and_access_denied_is_not(hostile):
    with pytest.raises(SourceUnavailable, match="SlowDown"):
        read_s3("s3://hostile/throttled", hostile, MB, 5)
    with pytest.raises(SourceUnavailable):
        read_s3("s3://hostile/unavailable.jpg", hostile, MB, 5)
    assert code_of(lambda: read_s3("s3://hostile/denied", hostile, MB, 5)) == ErrorCode.FETCH_FAILED


def test_an_unreachable_store_is_worth_a_retry():
    closed = S3Options(endpoint_url="http://127.0.0.1:9", allowed_buckets=frozenset({"photos"}))
    with pytest.raises(SourceUnavailable, match="photos/a.jpg"):
        read_s3("s3://photos/a.jpg", closed, MB, 2)


def test_listing_walks_every_page_and_keeps_only_photos(store, moto_url):
    keys = [f"shoot/{i:03d}.jpg" for i in range(23)] + ["shoot/notes.txt", "shoot/raw/x.PNG", "shoot/dir/"]
    for key in keys:
        store.put_object(Bucket="elsewhere", Key=key, Body=b"x")
    store.put_object(Bucket="elsewhere", Key="other/y.jpg", Body=b"x")
    listed = list(list_s3_photos("s3://elsewhere/shoot/", S3Options(endpoint_url=moto_url), page_size=5))
    assert listed == sorted(f"s3://elsewhere/{k}" for k in keys if k.endswith((".jpg", ".PNG")))


@pytest.mark.parametrize("prefix", ["s3://missing-bucket/", "file:///tmp", "s3://a/", "s3://UPPER/x"])
def test_listing_failures_name_the_prefix(store, moto_url, prefix):
    with pytest.raises(ListingError, match="cannot list|not s3://bucket/prefix"):
        list(list_s3_photos(prefix, S3Options(endpoint_url=moto_url)))


def test_options_come_from_the_environment_and_bad_values_are_named():
    opts = S3Options.from_env(
        {"DARKROOM_S3_ALLOWED_BUCKETS": " photos, archive ", "DARKROOM_S3_ENDPOINT_URL": "http://minio:9000",
         "DARKROOM_S3_REGION": "eu-west-1", "DARKROOM_S3_ADDRESSING_STYLE": "path"}
    )  # fmt: skip
    assert opts == S3Options("http://minio:9000", frozenset({"photos", "archive"}), "eu-west-1", "path")
    assert S3Options.from_env({}) == S3Options()
    for env, named in [({"DARKROOM_S3_ALLOWED_BUCKETS": "ok,Bad_Name"}, "DARKROOM_S3_ALLOWED_BUCKETS"),
                       ({"DARKROOM_S3_ADDRESSING_STYLE": "sideways"}, "DARKROOM_S3_ADDRESSING_STYLE"),
                       ({"DARKROOM_S3_ENDPOINT_URL": "minio:9000"}, "DARKROOM_S3_ENDPOINT_URL")]:  # fmt: skip
        with pytest.raises(SettingsError, match=named):
            S3Options.from_env(env)


def test_keys_are_taken_literally():
    assert parse_s3_url("s3://photos/a b/c%20d?x#y.jpg") == ("photos", "a b/c%20d?x#y.jpg")


ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=40)
S3_URLS = st.one_of(
    ANY_TEXT,
    st.builds(
        lambda scheme, bucket, key: f"{scheme}{bucket}/{key}",
        st.sampled_from(["s3://", "S3://", "s3:/", "s3:///"]),
        st.one_of(
            st.sampled_from(
                ["photos", "elsewhere", "missing-bucket", "photos.", "photos:80", "[::1", "a]b["]
            ),
            ANY_TEXT,
        ),
        st.one_of(
            st.sampled_from(["2026/red.jpg", "big.jpg", "../elsewhere/red.jpg", "%2e%2e/x", ""]), ANY_TEXT
        ),
    ),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(url=S3_URLS)
def test_hostile_s3_urls_end_in_bytes_or_a_named_outcome(store, options, url):
    try:
        data = fetch(url, [], max_bytes=MB, timeout_s=5, s3=options)  # the worker's entry point
    except PermanentError as exc:
        assert exc.code in {
            ErrorCode.FORBIDDEN_URL,
            ErrorCode.NOT_FOUND,
            ErrorCode.FETCH_FAILED,
            ErrorCode.TOO_LARGE,
        }
    except SourceUnavailable:
        pass  # the store could not answer this key now: retried, then fetch_unavailable
    else:
        assert data == PHOTO, url


def test_credentials_come_from_the_standard_chain(store, options):
    """Without credentials anywhere in the chain the read is worth a retry (fix the pod's role and replay)."""
    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            mp.delenv(name)
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        mp.setenv("AWS_CONFIG_FILE", os.devnull)
        fresh = S3Options(
            endpoint_url=options.endpoint_url, allowed_buckets=options.allowed_buckets, region="us-east-1"
        )
        with pytest.raises(SourceUnavailable, match="NoCredentialsError"):
            read_s3("s3://photos/2026/red.jpg", fresh, MB, 5)


def test_the_worker_fetch_reads_s3_urls_only_from_allowed_buckets(store, options):
    assert fetch("s3://photos/2026/red.jpg", [], MB, 5, s3=options) == PHOTO
    assert code_of(lambda: fetch("s3://photos/2026/red.jpg", [], MB, 5)) == ErrorCode.FORBIDDEN_URL


def test_a_bad_s3_setting_stops_the_worker_with_one_line_naming_it():
    env = {
        **os.environ,
        "DARKROOM_S3_ADDRESSING_STYLE": "sideways",
        "DARKROOM_KAFKA_BOOTSTRAP": "127.0.0.1:9",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "tools.cli", "worker"], capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    output = proc.stdout + proc.stderr
    assert "DARKROOM_S3_ADDRESSING_STYLE" in output and "Traceback" not in output, output
