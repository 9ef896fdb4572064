"""An S3-compatible server for the backup tests: moto's server mode, a real HTTP server process
on 127.0.0.1 (pinned in pyproject's test extras, installed by scripts/install-deps.sh --test).

``S3Server`` starts it on a free port, waits until it answers, makes buckets, and lists and
reads objects with boto3, so a test can see what the simulator really wrote.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from typing import Any

import requests

from tests.prerequisites import require
from tests.real_linstor import free_port

ACCESS_KEY = "AKIAEXAMPLEBACKUPKEY"
SECRET_KEY = "backup-secret-key-never-logged-0123456789"
REGION = "us-east-1"


def require_s3_server() -> None:
    require(importlib.util.find_spec("moto") is not None
            and importlib.util.find_spec("flask") is not None
            and importlib.util.find_spec("boto3") is not None,
            "moto[server] and boto3 (scripts/install-deps.sh --test) for the S3 backup tests")


class S3Server:
    def __init__(self) -> None:
        require_s3_server()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(self.url + "/moto-api/", timeout=2)
                break
            except requests.RequestException:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("moto's S3 server did not start") from None
                time.sleep(0.2)

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.url, region_name=REGION,
                            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)

    def make_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def keys(self, bucket: str) -> list[str]:
        page = self.client().list_objects_v2(Bucket=bucket)
        return sorted(o["Key"] for o in page.get("Contents", []))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=20)
