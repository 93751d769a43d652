"""Embedded S3 endpoint: the npm package s3rver, disk-backed, standing in for MinIO.

The lake, MLflow artifacts and the broker's storage all live here. Every client (minio, boto3, S3Hook,
MLflow, Tansu) speaks plain S3 to it, exactly as it does to MinIO in docker-compose.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from minio import Minio

from shopstream.stack.base import Service, StackError, port_in_use
from shopstream.stack.process import ProcSpec

EMBEDDED_CREDENTIALS = ("S3RVER", "S3RVER")  # s3rver accepts only its built-in account


def s3rver_bin() -> str:
    """The s3rver entry point installed by `make install` (into the venv's node/ folder)."""
    candidate = Path(sys.prefix) / "node" / "node_modules" / ".bin" / "s3rver"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("s3rver")
    if found:
        return found
    raise StackError(
        f"s3rver is not installed (looked in {candidate.parent} and PATH). Run `make install`, which runs "
        f"`npm install --prefix {candidate.parents[2]} s3rver`."
    )


def minio_client(settings) -> Minio:
    """A MinIO client for the configured S3 endpoint (MinIO itself or the embedded stand-in)."""
    s3 = settings.s3
    return Minio(
        s3.netloc, access_key=s3.access_key, secret_key=s3.secret_key.get_secret_value(),
        secure=s3.secure, region=s3.region,
    )


class S3Service(Service):
    name = "s3"
    start_timeout = 30.0

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

    def ports(self) -> dict[int, str]:
        return {self.port: "SHOPSTREAM_S3__ENDPOINT_URL"}

    def address(self) -> str:
        return self.settings.s3.endpoint_url

    def specs(self) -> list[ProcSpec]:
        argv = [s3rver_bin(), "-d", str(self.data_dir), "-a", self.host, "-p", str(self.port), "--silent"]
        return [ProcSpec("s3", argv)]

    def prepare(self) -> None:
        s3 = self.settings.s3
        if (s3.access_key, s3.secret_key.get_secret_value()) != EMBEDDED_CREDENTIALS:
            raise StackError(
                "The embedded S3 endpoint (s3rver) only accepts the credentials S3RVER/S3RVER: set "
                "SHOPSTREAM_S3__ACCESS_KEY=S3RVER and SHOPSTREAM_S3__SECRET_KEY=S3RVER, or point "
                "SHOPSTREAM_S3__ENDPOINT_URL at a real MinIO and do not start the embedded one."
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)

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

    def details(self) -> str:
        try:
            names = [b.name for b in minio_client(self.settings).list_buckets()]
            return "buckets: " + ", ".join(names)
        except Exception:  # noqa: BLE001
            return ""
