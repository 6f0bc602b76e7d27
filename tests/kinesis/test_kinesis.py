"""The Kinesis Data Streams API, driven by the real boto3 and AWS CLI."""

import base64
import datetime
import hashlib
import json
import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from unittest import mock

import botocore.auth
import botocore.awsrequest
import botocore.credentials
import botocore.exceptions
import cbor2
import pytest

from conftest import REGION, Weir


def error_of(call):
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        call()
    return caught.value.response["Error"]["Code"], caught.value.response["Error"]["Message"]


def read_shard(kinesis, stream, shard_id, kind="TRIM_HORIZON", limit=None, **position):
    iterator = kinesis.get_shard_iterator(
        StreamName=stream, ShardId=shard_id, ShardIteratorType=kind, **position
    )["ShardIterator"]
    records = []
    while True:
        args = {"ShardIterator": iterator}
        if limit:
            args["Limit"] = limit
        answer = kinesis.get_records(**args)
        records.extend(answer["Records"])
        iterator = answer["NextShardIterator"]
        assert iterator
        if not answer["Records"]:
            return records, iterator


# --- streams ---------------------------------------------------------------

def test_stream_lifecycle_and_descriptions(kinesis):
    kinesis.create_stream(StreamName="lifecycle", ShardCount=3)
    kinesis.get_waiter("stream_exists").wait(StreamName="lifecycle", WaiterConfig={"Delay": 1})
    description = kinesis.describe_stream(StreamName="lifecycle")["StreamDescription"]
    assert description["StreamStatus"] == "ACTIVE"
    assert description["StreamARN"] == f"arn:aws:kinesis:{REGION}:000000000000:stream/lifecycle"
    assert description["RetentionPeriodHours"] == 24
    created = description["StreamCreationTimestamp"]
    assert abs(time.time() - created.timestamp()) < 300, created
    assert [s["ShardId"] for s in description["Shards"]] == [
        "shardId-000000000000", "shardId-000000000001", "shardId-000000000002"]
    ranges = [(int(s["HashKeyRange"]["StartingHashKey"]), int(s["HashKeyRange"]["EndingHashKey"]))
              for s in description["Shards"]]
    assert ranges[0][0] == 0 and ranges[-1][1] == 2**128 - 1
    assert all(ranges[i][1] + 1 == ranges[i + 1][0] for i in range(2)), ranges

    summary = kinesis.describe_stream_summary(StreamARN=description["StreamARN"])
    assert summary["StreamDescriptionSummary"]["OpenShardCount"] == 3
    assert summary["StreamDescriptionSummary"]["StreamCreationTimestamp"] == created

    page = kinesis.describe_stream(StreamName="lifecycle", Limit=2)["StreamDescription"]
    assert len(page["Shards"]) == 2 and page["HasMoreShards"]
    rest = kinesis.describe_stream(
        StreamName="lifecycle", ExclusiveStartShardId=page["Shards"][-1]["ShardId"]
    )["StreamDescription"]
    assert [s["ShardId"] for s in rest["Shards"]] == ["shardId-000000000002"]
    assert not rest["HasMoreShards"]

    code, message = error_of(lambda: kinesis.create_stream(StreamName="lifecycle", ShardCount=1))
    assert code == "ResourceInUseException", message
    kinesis.delete_stream(StreamName="lifecycle")
    code, message = error_of(lambda: kinesis.describe_stream(StreamName="lifecycle"))
    assert code == "ResourceNotFoundException"
    assert message == "Stream lifecycle under account 000000000000 not found."


def test_list_streams_paginates(kinesis):
    names = [f"page-{i}" for i in range(5)]
    for name in names:
        kinesis.create_stream(StreamName=name, ShardCount=1)
    try:
        first = kinesis.list_streams(Limit=2)
        assert first["HasMoreStreams"] and len(first["StreamNames"]) == 2
        assert first["StreamSummaries"][0]["StreamStatus"] == "ACTIVE"
        created = first["StreamSummaries"][0]["StreamCreationTimestamp"]
        assert abs(time.time() - created.timestamp()) < 300, created
        seen = list(first["StreamNames"])
        token = first["NextToken"]
        while token:
            page = kinesis.list_streams(NextToken=token, Limit=2)
            seen.extend(page["StreamNames"])
            token = page.get("NextToken")
        assert set(names) <= set(seen) and seen == sorted(seen)
        paginated = [n for page in kinesis.get_paginator("list_streams").paginate(
            PaginationConfig={"PageSize": 2}) for n in page["StreamNames"]]
        assert paginated == seen
        after = kinesis.list_streams(ExclusiveStartStreamName="page-2")["StreamNames"]
        assert "page-2" not in after and "page-3" in after
    finally:
        for name in names:
            kinesis.delete_stream(StreamName=name)


def test_list_shards_paginates_and_filters(kinesis):
    kinesis.create_stream(StreamName="shards5", ShardCount=5)
    try:
        first = kinesis.list_shards(StreamName="shards5", MaxResults=2)
        assert [s["ShardId"] for s in first["Shards"]] == [
            "shardId-000000000000", "shardId-000000000001"]
        second = kinesis.list_shards(NextToken=first["NextToken"], MaxResults=10)
        assert len(second["Shards"]) == 3 and "NextToken" not in second
        code, _ = error_of(lambda: kinesis.list_shards(
            StreamName="shards5", NextToken=first["NextToken"]))
        assert code == "InvalidArgumentException"
        after = kinesis.list_shards(
            StreamName="shards5",
            ShardFilter={"Type": "AFTER_SHARD_ID", "ShardId": "shardId-000000000003"})
        assert [s["ShardId"] for s in after["Shards"]] == ["shardId-000000000004"]
        every = kinesis.list_shards(StreamName="shards5", ShardFilter={"Type": "AT_LATEST"})
        assert len(every["Shards"]) == 5
    finally:
        kinesis.delete_stream(StreamName="shards5")


def test_on_demand_streams_get_four_shards_and_resharding_says_why_not(kinesis):
    kinesis.create_stream(StreamName="ondemand", StreamModeDetails={"StreamMode": "ON_DEMAND"})
    try:
        shards = kinesis.list_shards(StreamName="ondemand")["Shards"]
        assert len(shards) == 4
        code, message = error_of(lambda: kinesis.update_shard_count(
            StreamName="ondemand", TargetShardCount=8, ScalingType="UNIFORM_SCALING"))
        assert code == "InvalidArgumentException" and "not supported yet" in message
    finally:
        kinesis.delete_stream(StreamName="ondemand")
    limits = kinesis.describe_limits()
    # storage.shards_max, the default
    assert limits["ShardLimit"] == 1024 and 0 <= limits["OpenShardCount"] <= 1024


# --- put and get ------------------------------------------------------------

def test_put_record_routes_by_md5_and_reads_back_byte_for_byte(kinesis, stream):
    data = bytes(range(256)) * 4
    put = kinesis.put_record(StreamName=stream, Data=data, PartitionKey="user-1",
                             SequenceNumberForOrdering="0")
    shards = kinesis.list_shards(StreamName=stream)["Shards"]
    md5 = int(hashlib.md5(b"user-1").hexdigest(), 16)
    expected = next(s["ShardId"] for s in shards
                    if int(s["HashKeyRange"]["StartingHashKey"]) <= md5
                    <= int(s["HashKeyRange"]["EndingHashKey"]))
    assert put["ShardId"] == expected
    records, _ = read_shard(kinesis, stream, put["ShardId"])
    assert len(records) == 1
    assert records[0]["Data"] == data
    assert records[0]["PartitionKey"] == "user-1"
    assert records[0]["SequenceNumber"] == put["SequenceNumber"]
    arrival = records[0]["ApproximateArrivalTimestamp"]
    assert abs(arrival.timestamp() - time.time()) < 60

    last = kinesis.put_record(StreamName=stream, Data=b"x", PartitionKey="k",
                              ExplicitHashKey=str(2**128 - 1))
    assert last["ShardId"] == shards[-1]["ShardId"]


def test_put_records_answers_every_record_in_order(kinesis, stream):
    entries = [{"Data": f"record {i}".encode(), "PartitionKey": f"key-{i % 17}"}
               for i in range(500)]
    answer = kinesis.put_records(StreamName=stream, Records=entries)
    assert answer["FailedRecordCount"] == 0
    assert len(answer["Records"]) == 500
    by_shard = {}
    for entry, result in zip(entries, answer["Records"]):
        by_shard.setdefault(result["ShardId"], []).append((int(result["SequenceNumber"]), entry))
    for shard_id, expected in by_shard.items():
        sequences = [s for s, _ in expected]
        assert sequences == sorted(sequences), "sequence numbers grow in request order"
        records, _ = read_shard(kinesis, stream, shard_id, limit=37)
        assert [r["Data"] for r in records] == [e["Data"] for _, e in expected]
        assert [r["SequenceNumber"] for r in records] == [str(s) for s in sequences]


def test_every_iterator_type(kinesis, stream):
    shard = "shardId-000000000000"
    key = next(f"k{i}" for i in range(1000)
               if int(hashlib.md5(f"k{i}".encode()).hexdigest(), 16) < 2**127)
    first = kinesis.put_record(StreamName=stream, Data=b"one", PartitionKey=key)
    time.sleep(0.05)
    middle_time = datetime.datetime.now(datetime.timezone.utc)
    time.sleep(0.05)
    second = kinesis.put_record(StreamName=stream, Data=b"two", PartitionKey=key)
    assert first["ShardId"] == second["ShardId"] == shard

    def data(kind, **position):
        records, _ = read_shard(kinesis, stream, shard, kind, **position)
        return [r["Data"] for r in records]

    assert data("TRIM_HORIZON") == [b"one", b"two"]
    assert data("AT_SEQUENCE_NUMBER", StartingSequenceNumber=first["SequenceNumber"]) == [
        b"one", b"two"]
    assert data("AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=first["SequenceNumber"]) == [b"two"]
    assert data("AT_TIMESTAMP", Timestamp=middle_time) == [b"two"]

    latest = kinesis.get_shard_iterator(
        StreamName=stream, ShardId=shard, ShardIteratorType="LATEST")["ShardIterator"]
    empty = kinesis.get_records(ShardIterator=latest)
    assert empty["Records"] == [] and empty["NextShardIterator"]
    assert empty["MillisBehindLatest"] == 0
    kinesis.put_record(StreamName=stream, Data=b"three", PartitionKey=key)
    after = kinesis.get_records(ShardIterator=empty["NextShardIterator"])
    assert [r["Data"] for r in after["Records"]] == [b"three"]

    # A time in the future: an empty answer at once, never a hang, and the
    # next iterator still waits for that time.
    future = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
    iterator = kinesis.get_shard_iterator(
        StreamName=stream, ShardId=shard, ShardIteratorType="AT_TIMESTAMP",
        Timestamp=future)["ShardIterator"]
    started = time.monotonic()
    answer = kinesis.get_records(ShardIterator=iterator)
    assert answer["Records"] == [] and time.monotonic() - started < 5
    kinesis.put_record(StreamName=stream, Data=b"four", PartitionKey=key)
    assert kinesis.get_records(ShardIterator=answer["NextShardIterator"])["Records"] == []

    code, _ = error_of(lambda: kinesis.get_shard_iterator(
        StreamName=stream, ShardId=shard, ShardIteratorType="AT_SEQUENCE_NUMBER",
        StartingSequenceNumber="999999"))
    assert code == "InvalidArgumentException"
    code, _ = error_of(lambda: kinesis.get_shard_iterator(
        StreamName=stream, ShardId="shardId-000000000009", ShardIteratorType="LATEST"))
    assert code == "ResourceNotFoundException"


def test_get_records_limit_and_millis_behind(kinesis, stream):
    kinesis.put_records(StreamName=stream, Records=[
        {"Data": b"r", "PartitionKey": "same"} for _ in range(30)])
    shard = kinesis.put_record(StreamName=stream, Data=b"r", PartitionKey="same")["ShardId"]
    iterator = kinesis.get_shard_iterator(
        StreamName=stream, ShardId=shard, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    page = kinesis.get_records(ShardIterator=iterator, Limit=10)
    assert len(page["Records"]) == 10
    assert "MillisBehindLatest" in page
    code, message = error_of(lambda: kinesis.get_records(ShardIterator=iterator, Limit=10001))
    assert code == "ValidationException"
    assert "Member must have value less than or equal to 10000" in message


# --- bad input ---------------------------------------------------------------

def test_validation_errors_have_the_aws_form(kinesis, stream):
    code, message = error_of(lambda: kinesis.put_record(StreamName=stream, Data=b"x",
                                                        PartitionKey="k" * 257))
    assert code == "ValidationException"
    assert message.startswith("1 validation error detected: Value '")
    assert "at 'partitionKey' failed to satisfy constraint: " \
           "Member must have length less than or equal to 256" in message

    code, message = error_of(lambda: kinesis.put_records(StreamName=stream, Records=[
        {"Data": b"x", "PartitionKey": "k"} for _ in range(501)]))
    assert code == "ValidationException" and "less than or equal to 500" in message

    code, message = error_of(lambda: kinesis.put_record(
        StreamName=stream, Data=b"x" * (1024 * 1024 + 1), PartitionKey="k"))
    assert code == "ValidationException" and "at 'data'" in message

    code, message = error_of(lambda: kinesis.create_stream(StreamName="bad name!", ShardCount=1))
    assert code == "ValidationException" and "regular expression pattern" in message

    code, _ = error_of(lambda: kinesis.put_record(StreamName="no-such-stream", Data=b"x",
                                                  PartitionKey="k"))
    assert code == "ResourceNotFoundException"

    iterator = kinesis.get_shard_iterator(
        StreamName=stream, ShardId="shardId-000000000000",
        ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    tampered = iterator[:-6] + ("AAAAAA" if not iterator.endswith("AAAAAA") else "BBBBBB")
    code, message = error_of(lambda: kinesis.get_records(ShardIterator=tampered))
    assert code == "InvalidArgumentException" and "Invalid ShardIterator" in message

    # Nothing acked before the bad requests was lost.
    kinesis.put_record(StreamName=stream, Data=b"kept", PartitionKey="k")
    total = sum(len(read_shard(kinesis, stream, s["ShardId"])[0])
                for s in kinesis.list_shards(StreamName=stream)["Shards"])
    assert total == 1


def raw_post(endpoint, headers, body):
    request = urllib.request.Request(endpoint + "/", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def test_malformed_requests_get_typed_errors(weir):
    base = {"Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": "Kinesis_20131202.ListStreams"}
    status, headers, body = raw_post(weir.endpoint, base, b"{}")
    assert status == 400
    assert json.loads(body)["__type"] == "MissingAuthenticationTokenException"
    assert headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
    assert headers["x-amzn-RequestId"]

    status, _, body = raw_post(weir.endpoint, {**base, "Authorization": "AWS4-HMAC-SHA256 x"}, b"{}")
    assert status == 400 and json.loads(body)["__type"] == "IncompleteSignatureException"

    signed = sign(weir, "ListStreams", b"{not json")
    status, _, body = raw_post(weir.endpoint, signed, b"{not json")
    assert status == 400 and json.loads(body)["__type"] == "SerializationException"

    signed = sign(weir, "NoSuchOperation", b"{}")
    status, _, body = raw_post(weir.endpoint, signed, b"{}")
    assert json.loads(body)["__type"] == "UnknownOperationException"


def sign(weir, operation, body, content_type="application/x-amz-json-1.1"):
    """Headers for a request signed with botocore's own SigV4 signer."""
    return sign_for(weir, weir.endpoint, operation, body, content_type)


# --- authentication ---------------------------------------------------------

def test_sigv4_failures_and_token_roles(weir, kinesis, stream):
    key, secret = weir.admin_credentials()
    code, _ = error_of(lambda: weir.client((key, secret[:-1] + "x")).list_streams())
    assert code == "InvalidSignatureException"
    code, _ = error_of(lambda: weir.client(("nobody", secret)).list_streams())
    assert code == "UnrecognizedClientException"

    # A request signed ten minutes ago is refused, naming the clock.
    old = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=10)
    with mock.patch("botocore.auth.get_current_datetime", return_value=old):
        headers = sign(weir, "ListStreams", b"{}")
    status, _, body = raw_post(weir.endpoint, headers, b"{}")
    answer = json.loads(body)
    assert answer["__type"] == "InvalidSignatureException" and "Signature expired" in answer["message"]

    out = weir.weir("token", "create", "--name", "sensor", "--role", "produce",
                    "--streams", stream)
    line = next(l.strip() for l in out.splitlines() if l.strip().startswith("Kinesis API (SigV4):"))
    fields = dict(part.split("=", 1) for part in line.split(": ", 1)[1].split())
    sensor = weir.client((fields["aws_access_key_id"], fields["aws_secret_access_key"]))
    sensor.put_record(StreamName=stream, Data=b"from the sensor", PartitionKey="s")
    code, _ = error_of(lambda: sensor.create_stream(StreamName="not-allowed", ShardCount=1))
    assert code == "AccessDeniedException"
    code, _ = error_of(lambda: sensor.get_shard_iterator(
        StreamName=stream, ShardId="shardId-000000000000", ShardIteratorType="LATEST"))
    assert code == "AccessDeniedException"
    assert sensor.list_streams()["StreamNames"] == [stream]

    weir.weir("token", "delete", "sensor")
    code, _ = error_of(lambda: sensor.put_record(StreamName=stream, Data=b"x", PartitionKey="s"))
    assert code == "UnrecognizedClientException"


# --- CBOR (what the AWS SDK for Java sends) -----------------------------------

def cbor_call(weir, operation, payload):
    body = cbor2.dumps(payload)
    headers = sign(weir, operation, body, content_type="application/x-amz-cbor-1.1")
    status, response_headers, raw = raw_post(weir.endpoint, headers, body)
    assert response_headers["Content-Type"] == "application/x-amz-cbor-1.1"
    # Timestamps are tag 1 with epoch milliseconds, as the Java SDK writes them.
    decoded = cbor2.loads(raw, semantic_decoders={1: lambda value, _immutable: ("epoch-ms", value)})
    return status, decoded


def test_cbor_requests_and_answers(weir, stream):
    data = b"\x00\xff binary \x80"
    status, put = cbor_call(weir, "PutRecord",
                            {"StreamName": stream, "Data": data, "PartitionKey": "cbor",
                             "SomeFutureField": 1})
    assert status == 200, put
    status, got = cbor_call(weir, "GetShardIterator",
                            {"StreamName": stream, "ShardId": put["ShardId"],
                             "ShardIteratorType": "TRIM_HORIZON"})
    assert status == 200, got
    status, records = cbor_call(weir, "GetRecords", {"ShardIterator": got["ShardIterator"]})
    assert status == 200, records
    [record] = records["Records"]
    assert record["Data"] == data, "blobs are CBOR byte strings"
    kind, ms = record["ApproximateArrivalTimestamp"]
    assert kind == "epoch-ms" and abs(ms / 1000 - time.time()) < 60

    status, error = cbor_call(weir, "DescribeStream", {"StreamName": "no-such-stream"})
    assert status == 400 and error["__type"] == "ResourceNotFoundException"


# --- the AWS CLI ---------------------------------------------------------------

def test_the_aws_cli(weir, stream):
    key, secret = weir.admin_credentials()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret,
           "AWS_DEFAULT_REGION": REGION, "AWS_CONFIG_FILE": "/dev/null",
           "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}

    def aws(*args):
        result = subprocess.run(["aws", "kinesis", *args, "--endpoint-url", weir.endpoint,
                                 "--output", "json"], capture_output=True, text=True, env=env,
                                timeout=120)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout) if result.stdout.strip() else None

    assert stream in aws("list-streams")["StreamNames"]
    summary = aws("describe-stream-summary", "--stream-name", stream)
    assert summary["StreamDescriptionSummary"]["OpenShardCount"] == 2
    # AWS CLI v1 sends a blob argument's text as the record's bytes.
    put = aws("put-record", "--stream-name", stream, "--partition-key", "cli",
              "--data", "hello from the cli")
    iterator = aws("get-shard-iterator", "--stream-name", stream, "--shard-id", put["ShardId"],
                   "--shard-iterator-type", "TRIM_HORIZON")["ShardIterator"]
    records = aws("get-records", "--shard-iterator", iterator)["Records"]
    assert [base64.b64decode(r["Data"]) for r in records] == [b"hello from the cli"]


# --- durability -----------------------------------------------------------------

def test_records_survive_sigkill_and_iterators_survive_restart():
    with tempfile.TemporaryDirectory(prefix="weir-kinesis-restart-") as data:
        server = Weir(data)
        try:
            kinesis = server.client()
            kinesis.create_stream(StreamName="durable", ShardCount=2)
            sent = [f"event {i}".encode() for i in range(1200)]
            for start in range(0, len(sent), 400):
                answer = kinesis.put_records(StreamName="durable", Records=[
                    {"Data": d, "PartitionKey": str(i)} for i, d in enumerate(sent[start:start + 400])])
                assert answer["FailedRecordCount"] == 0
            iterator = kinesis.get_shard_iterator(
                StreamName="durable", ShardId="shardId-000000000000",
                ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
            server.kill()  # SIGKILL: no shutdown, no final sync
            server.start()
            kinesis = server.client()
            stored = []
            for shard in kinesis.list_shards(StreamName="durable")["Shards"]:
                records, _ = read_shard(kinesis, "durable", shard["ShardId"])
                stored.extend(r["Data"] for r in records)
            assert sorted(stored) == sorted(sent)
            # The iterator from before the crash still works.
            assert kinesis.get_records(ShardIterator=iterator)["Records"]
        finally:
            server.stop()


def test_iterators_expire():
    with tempfile.TemporaryDirectory(prefix="weir-kinesis-ttl-") as data:
        config = os.path.join(data, "weir.toml")
        with open(config, "w") as f:
            f.write("[kinesis]\nshard_iterator_ttl_ms = 1000\n")
        server = Weir(os.path.join(data, "d"), ["--config", config])
        try:
            kinesis = server.client()
            kinesis.create_stream(StreamName="ttl", ShardCount=1)
            iterator = kinesis.get_shard_iterator(
                StreamName="ttl", ShardId="shardId-000000000000",
                ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
            time.sleep(1.5)
            code, message = error_of(lambda: kinesis.get_records(ShardIterator=iterator))
            assert code == "ExpiredIteratorException", message
        finally:
            server.stop()


# --- enhanced fan-out ---------------------------------------------------------

def test_stream_consumers_and_subscribe_to_shard(kinesis, stream):
    arn = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamARN"]
    consumer = kinesis.register_stream_consumer(StreamARN=arn, ConsumerName="app")["Consumer"]
    assert consumer["ConsumerStatus"] == "ACTIVE"
    assert consumer["ConsumerARN"].startswith(arn + "/consumer/app:")
    code, _ = error_of(lambda: kinesis.register_stream_consumer(StreamARN=arn, ConsumerName="app"))
    assert code == "ResourceInUseException"
    listed = kinesis.list_stream_consumers(StreamARN=arn)["Consumers"]
    assert [c["ConsumerName"] for c in listed] == ["app"]
    described = kinesis.describe_stream_consumer(ConsumerARN=consumer["ConsumerARN"])
    assert described["ConsumerDescription"]["StreamARN"] == arn

    key = next(f"k{i}" for i in range(1000)
               if int(hashlib.md5(f"k{i}".encode()).hexdigest(), 16) < 2**127)
    first = kinesis.put_record(StreamName=stream, Data=b"before", PartitionKey=key)
    answer = kinesis.subscribe_to_shard(
        ConsumerARN=consumer["ConsumerARN"], ShardId="shardId-000000000000",
        StartingPosition={"Type": "TRIM_HORIZON"})
    events = answer["EventStream"]
    received = []
    continuation = None
    for event in events:
        batch = event["SubscribeToShardEvent"]
        received.extend(r["Data"] for r in batch["Records"])
        continuation = batch["ContinuationSequenceNumber"]
        if received == [b"before"]:
            kinesis.put_record(StreamName=stream, Data=b"live", PartitionKey=key)
        if b"live" in received:
            break
    events.close()
    assert received == [b"before", b"live"]
    assert int(continuation) == int(first["SequenceNumber"]) + 2

    # Resuming from the continuation number sees nothing twice.
    answer = kinesis.subscribe_to_shard(
        ConsumerARN=consumer["ConsumerARN"], ShardId="shardId-000000000000",
        StartingPosition={"Type": "AT_SEQUENCE_NUMBER", "SequenceNumber": continuation})
    kinesis.put_record(StreamName=stream, Data=b"after", PartitionKey=key)
    for event in answer["EventStream"]:
        records = event["SubscribeToShardEvent"]["Records"]
        if records:
            assert [r["Data"] for r in records] == [b"after"]
            break
    answer["EventStream"].close()

    kinesis.deregister_stream_consumer(ConsumerARN=consumer["ConsumerARN"])
    code, _ = error_of(lambda: kinesis.describe_stream_consumer(
        StreamARN=arn, ConsumerName="app"))
    assert code == "ResourceNotFoundException"


def test_readers_are_moved_past_records_damaged_on_disk():
    """A Kinesis client cannot step past records the disk damaged: GetRecords
    and SubscribeToShard move it past them instead of failing for ever."""
    with tempfile.TemporaryDirectory(prefix="weir-kinesis-damage-") as data:
        server = Weir(data)
        try:
            kinesis = server.client()
            kinesis.create_stream(StreamName="worn", ShardCount=1)
            # Three calls, three chunks of one size in the stream's first segment.
            for batch in range(3):
                answer = kinesis.put_records(StreamName="worn", Records=[
                    {"Data": f"{batch}-{i}".encode(), "PartitionKey": "k"} for i in range(10)])
                assert answer["FailedRecordCount"] == 0
            server.stop()
            segment = os.path.join(data, "db", "segments", "1", f"{0:020}.seg")
            with open(segment, "r+b") as f:
                damaged = bytearray(f.read())
                damaged[len(damaged) // 2] ^= 1
                f.seek(0)
                f.write(damaged)
            server.start()
            kinesis = server.client()
            expected = [f"{batch}-{i}".encode() for batch in (0, 2) for i in range(10)]

            records, _ = read_shard(kinesis, "worn", "shardId-000000000000")
            assert [r["Data"] for r in records] == expected

            arn = kinesis.describe_stream_summary(
                StreamName="worn")["StreamDescriptionSummary"]["StreamARN"]
            consumer = kinesis.register_stream_consumer(
                StreamARN=arn, ConsumerName="app")["Consumer"]["ConsumerARN"]
            received, position = [], {"Type": "TRIM_HORIZON"}
            for _ in range(3):  # the session ends at the damage; subscribe again
                answer = kinesis.subscribe_to_shard(
                    ConsumerARN=consumer, ShardId="shardId-000000000000",
                    StartingPosition=position)
                for event in answer["EventStream"]:
                    batch = event["SubscribeToShardEvent"]
                    received.extend(r["Data"] for r in batch["Records"])
                    position = {"Type": "AT_SEQUENCE_NUMBER",
                                "SequenceNumber": batch["ContinuationSequenceNumber"]}
                    if len(received) == len(expected):
                        break
                answer["EventStream"].close()
                if len(received) == len(expected):
                    break
            assert received == expected
        finally:
            server.stop()


# --- tags, retention, monitoring ------------------------------------------------

def test_tags_on_streams(kinesis, stream):
    arn = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamARN"]
    kinesis.add_tags_to_stream(StreamName=stream, Tags={"team": "edge", "site": "plant-7"})
    kinesis.tag_resource(ResourceARN=arn, Tags={"tier": "gold"})
    tags = kinesis.list_tags_for_stream(StreamName=stream)
    assert tags["Tags"] == [{"Key": "site", "Value": "plant-7"}, {"Key": "team", "Value": "edge"},
                            {"Key": "tier", "Value": "gold"}]
    assert not tags["HasMoreTags"]
    page = kinesis.list_tags_for_stream(StreamName=stream, Limit=1, ExclusiveStartTagKey="site")
    assert page["Tags"] == [{"Key": "team", "Value": "edge"}] and page["HasMoreTags"]
    code, message = error_of(lambda: kinesis.list_tags_for_stream(StreamName=stream, Limit=51))
    assert code == "ValidationException" and "less than or equal to 50" in message
    kinesis.remove_tags_from_stream(StreamName=stream, TagKeys=["site"])
    kinesis.untag_resource(ResourceARN=arn, TagKeys=["tier"])
    assert kinesis.list_tags_for_resource(ResourceARN=arn)["Tags"] == [
        {"Key": "team", "Value": "edge"}]
    code, message = error_of(lambda: kinesis.add_tags_to_stream(
        StreamName=stream, Tags={f"k{i}": "v" for i in range(60)}))
    assert code == "LimitExceededException", message


def test_retention_period_changes(kinesis, stream):
    summary = lambda: kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]
    assert summary()["RetentionPeriodHours"] == 24
    kinesis.increase_stream_retention_period(StreamName=stream, RetentionPeriodHours=72)
    assert summary()["RetentionPeriodHours"] == 72
    code, message = error_of(lambda: kinesis.increase_stream_retention_period(
        StreamName=stream, RetentionPeriodHours=48))
    assert code == "InvalidArgumentException", message
    kinesis.decrease_stream_retention_period(StreamName=stream, RetentionPeriodHours=24)
    assert summary()["RetentionPeriodHours"] == 24


def test_enhanced_monitoring_is_accepted(kinesis, stream):
    answer = kinesis.enable_enhanced_monitoring(StreamName=stream, ShardLevelMetrics=["ALL"])
    assert answer["StreamName"] == stream and "DesiredShardLevelMetrics" in answer
    answer = kinesis.disable_enhanced_monitoring(StreamName=stream, ShardLevelMetrics=["ALL"])
    assert answer["DesiredShardLevelMetrics"] == []
    code, message = error_of(lambda: kinesis.start_stream_encryption(
        StreamName=stream, EncryptionType="KMS", KeyId="alias/aws/kinesis"))
    assert code == "InvalidArgumentException" and "encrypt" in message


def test_answers_carry_a_content_length(weir):
    status, headers, body = raw_post(
        weir.endpoint, {"X-Amz-Target": "Kinesis_20131202.ListStreams"}, b"{}")
    assert status == 400
    assert headers["Content-Length"] == str(len(body))
    assert "Transfer-Encoding" not in headers


# --- TLS and HTTP/2 on the same port ------------------------------------------------

def test_https_with_the_servers_certificate(weir, stream):
    kinesis = weir.client(tls=True)
    put = kinesis.put_record(StreamName=stream, Data=b"over tls", PartitionKey="t")
    records, _ = read_shard(kinesis, stream, put["ShardId"])
    assert [r["Data"] for r in records] == [b"over tls"]


def test_https_speaks_tls_1_2_and_1_3(weir, stream):
    """Older clients (Java 8, OpenSSL 1.0.2 builds of agents) stop at TLS 1.2."""
    import http.client
    import ssl
    import urllib.parse

    body = json.dumps({"StreamName": stream}).encode()
    url = urllib.parse.urlsplit(weir.tls_endpoint)
    for version in [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]:
        context = ssl.create_default_context(cafile=weir.cert)
        context.minimum_version = context.maximum_version = version
        connection = http.client.HTTPSConnection(url.hostname, url.port, context=context)
        headers = sign_for(weir, weir.tls_endpoint, "DescribeStreamSummary", body)
        connection.request("POST", "/", body=body, headers=headers)
        response = connection.getresponse()
        answer = json.loads(response.read())
        assert connection.sock.version() == version.name.replace("_", "."), version
        assert response.status == 200, answer
        assert answer["StreamDescriptionSummary"]["StreamName"] == stream
        connection.close()


def test_http2_with_and_without_tls(weir, stream):
    import ssl

    import httpx
    body = json.dumps({"StreamName": stream}).encode()
    for endpoint, client in [
        (weir.tls_endpoint, httpx.Client(http2=True, verify=ssl.create_default_context(cafile=weir.cert))),
        # Cleartext HTTP/2 with prior knowledge (no upgrade dance).
        (weir.endpoint, httpx.Client(http1=False, http2=True)),
    ]:
        with client:
            headers = {**sign_for(weir, endpoint, "DescribeStreamSummary", body)}
            response = client.post(endpoint + "/", content=body, headers=headers)
            assert response.http_version == "HTTP/2", endpoint
            assert response.status_code == 200, response.text
            assert response.json()["StreamDescriptionSummary"]["StreamName"] == stream


def sign_for(weir, endpoint, operation, body, content_type="application/x-amz-json-1.1"):
    key, secret = weir.admin_credentials()
    request = botocore.awsrequest.AWSRequest(
        method="POST", url=endpoint + "/", data=body,
        headers={"Content-Type": content_type,
                 "X-Amz-Target": f"Kinesis_20131202.{operation}"})
    botocore.auth.SigV4Auth(
        botocore.credentials.Credentials(key, secret), "kinesis", REGION).add_auth(request)
    return dict(request.headers.items())


# --- one store, two protocols -----------------------------------------------------

def test_records_cross_between_quic_and_the_kinesis_api(weir, kinesis, stream):
    # Written over QUIC by the weir CLI, read with boto3 ...
    weir.weir("put", stream, "from quic", "--key", "same-key")
    put = kinesis.put_record(StreamName=stream, Data=b"from kinesis", PartitionKey="same-key")
    records, _ = read_shard(kinesis, stream, put["ShardId"])
    assert [r["Data"] for r in records] == [b"from quic", b"from kinesis"]
    # ... and the Kinesis API's record read over QUIC, with the same
    # sequence number.
    shard = put["ShardId"].removeprefix("shardId-").lstrip("0") or "0"
    out = weir.weir("get", stream, "--shard", shard, "--from", "trim-horizon")
    assert "from quic" in out and "from kinesis" in out
    assert put["SequenceNumber"] in out


def test_an_oversized_body_is_refused_before_it_is_read(weir):
    import http.client
    host, port = weir.endpoint.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.putrequest("POST", "/")
    connection.putheader("X-Amz-Target", "Kinesis_20131202.PutRecords")
    connection.putheader("Content-Length", str(64 * 1024 * 1024))
    connection.endheaders()
    response = connection.getresponse()
    body = json.loads(response.read())
    assert response.status == 400
    assert body["__type"] == "InvalidArgumentException"
    assert "request_body_bytes_max" in body["message"]
