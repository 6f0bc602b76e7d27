"""Fixtures: a real `weir serve` (the binary in $WEIR_BIN) on 127.0.0.1:0,
and boto3 clients signed with a real Weir token's SigV4 credentials.

Run by tests/it/kinesis.rs, which builds the binary, creates the venv and
passes WEIR_BIN; to run by hand: WEIR_BIN=target/debug/weir pytest tests/kinesis
"""

import os
import subprocess
import tempfile

import boto3
import botocore.config
import pytest

REGION = "us-east-1"


class Weir:
    """One `weir serve` child process, stopped by its PID."""

    def __init__(self, data_dir, extra_args=()):
        self.data_dir = data_dir
        self.extra_args = list(extra_args)
        self.process = None
        self.start()

    def start(self):
        self.process = subprocess.Popen(
            [
                os.environ["WEIR_BIN"],
                "serve",
                "--listen", "127.0.0.1:0",
                "--admin-listen", "127.0.0.1:0",
                "--kinesis-listen", "127.0.0.1:0",
                "--data", self.data_dir,
                *self.extra_args,
            ],
            stdout=subprocess.PIPE,
            env={**os.environ, "WEIR_LOG": "warn"},
            text=True,
        )
        quic = self.process.stdout.readline().strip()
        kinesis = self.process.stdout.readline().strip()
        assert quic.startswith("listening on "), quic
        assert kinesis.startswith("kinesis api on "), kinesis
        self.quic_addr = quic.removeprefix("listening on ")
        self.endpoint = kinesis.removeprefix("kinesis api on ")
        # The same port speaks HTTPS with the server's certificate.
        self.tls_endpoint = self.endpoint.replace("http://", "https://")
        self.cert = os.path.join(self.data_dir, "tls", "cert.pem")

    def kill(self):
        self.process.kill()
        self.process.wait()

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)

    def weir(self, *args):
        """Runs a `weir` CLI verb against this server; returns stdout."""
        result = subprocess.run(
            [os.environ["WEIR_BIN"], *args, "--data", self.data_dir, "--server", self.quic_addr],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    def admin_credentials(self):
        out = subprocess.run(
            [os.environ["WEIR_BIN"], "token", "aws-credentials", "--data", self.data_dir],
            capture_output=True, text=True, check=True,
        ).stdout
        values = dict(line.split(" = ") for line in out.strip().splitlines())
        return values["aws_access_key_id"], values["aws_secret_access_key"]

    def client(self, credentials=None, tls=False, **config):
        key, secret = credentials or self.admin_credentials()
        return boto3.client(
            "kinesis",
            endpoint_url=self.tls_endpoint if tls else self.endpoint,
            verify=self.cert if tls else None,
            region_name=REGION,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            config=botocore.config.Config(retries={"max_attempts": 2, "mode": "standard"}, **config),
        )


@pytest.fixture(scope="session")
def weir():
    with tempfile.TemporaryDirectory(prefix="weir-kinesis-") as data:
        server = Weir(data)
        yield server
        server.stop()


@pytest.fixture(scope="session")
def kinesis(weir):
    return weir.client()


_counter = [0]


@pytest.fixture
def stream(kinesis, request):
    """A fresh two-shard stream, deleted afterwards."""
    _counter[0] += 1
    name = f"{request.node.name[:80]}-{_counter[0]}".replace("[", "-").replace("]", "")
    kinesis.create_stream(StreamName=name, ShardCount=2)
    yield name
    kinesis.delete_stream(StreamName=name)
