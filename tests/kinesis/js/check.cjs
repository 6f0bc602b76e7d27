// The AWS SDK for JavaScript v3 (@aws-sdk/client-kinesis), unchanged,
// against Weir's Kinesis API: its own SigV4 signer, JSON protocol, error
// classes and, for SubscribeToShard, its HTTP/2 event-stream reader.
// tests/it/kinesis.rs starts Weir and runs this with WEIR_KINESIS_ENDPOINT
// and AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY set to a Weir token; any
// failed check exits non-zero with what differed.

const assert = require("node:assert/strict");
const {
  KinesisClient,
  CreateStreamCommand,
  DescribeStreamSummaryCommand,
  ListShardsCommand,
  PutRecordCommand,
  PutRecordsCommand,
  GetShardIteratorCommand,
  GetRecordsCommand,
  ListStreamsCommand,
  DescribeStreamCommand,
  AddTagsToStreamCommand,
  ListTagsForStreamCommand,
  RegisterStreamConsumerCommand,
  DescribeStreamConsumerCommand,
  SubscribeToShardCommand,
  DeleteStreamCommand,
} = require("@aws-sdk/client-kinesis");
const { NodeHttp2Handler } = require("@smithy/node-http-handler");

const endpoint = process.env.WEIR_KINESIS_ENDPOINT;
const credentials = {
  accessKeyId: process.env.AWS_ACCESS_KEY_ID,
  secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY,
};
const settings = { endpoint, region: "us-east-1", credentials, maxAttempts: 1 };
const kinesis = new KinesisClient(settings);
const STREAM = "js-sdk";

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(what, check) {
  for (let attempt = 0; attempt < 100; attempt++) {
    if (await check()) return;
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function errorName(promise) {
  try {
    await promise;
  } catch (error) {
    return error.name;
  }
  return "no error";
}

const hex = (bytes) => Buffer.from(bytes).toString("hex");

async function readShard(shardId) {
  const { ShardIterator } = await kinesis.send(
    new GetShardIteratorCommand({ StreamName: STREAM, ShardId: shardId, ShardIteratorType: "TRIM_HORIZON" }),
  );
  const records = [];
  let iterator = ShardIterator;
  for (;;) {
    const page = await kinesis.send(new GetRecordsCommand({ ShardIterator: iterator, Limit: 4 }));
    records.push(...page.Records);
    iterator = page.NextShardIterator;
    if (page.Records.length === 0 && page.MillisBehindLatest === 0) return records;
  }
}

async function main() {
  await kinesis.send(new CreateStreamCommand({ StreamName: STREAM, ShardCount: 2 }));
  let summary;
  await until("the stream to be active", async () => {
    summary = (await kinesis.send(new DescribeStreamSummaryCommand({ StreamName: STREAM })))
      .StreamDescriptionSummary;
    return summary.StreamStatus === "ACTIVE";
  });
  assert.equal(summary.OpenShardCount, 2);
  const shards = (await kinesis.send(new ListShardsCommand({ StreamName: STREAM }))).Shards;
  assert.deepEqual(shards.map((s) => s.ShardId), ["shardId-000000000000", "shardId-000000000001"]);

  // Every byte value, then ten records in one PutRecords.
  const everyByte = Uint8Array.from({ length: 256 }, (_, i) => i);
  const one = await kinesis.send(
    new PutRecordCommand({ StreamName: STREAM, PartitionKey: "bytes", Data: everyByte }),
  );
  assert.match(one.SequenceNumber, /^[0-9]+$/);
  const many = Array.from({ length: 10 }, (_, i) => ({
    PartitionKey: `user-${i}`,
    Data: Buffer.from(`{"i":${i}}`),
  }));
  const put = await kinesis.send(new PutRecordsCommand({ StreamName: STREAM, Records: many }));
  assert.equal(put.FailedRecordCount, 0);
  assert.equal(put.Records.length, 10);

  // Read back over both shards: every record, byte for byte, in shard order.
  const sent = [everyByte, ...many.map((r) => r.Data)].map(hex).sort();
  const read = [];
  for (const shard of shards) {
    const records = await readShard(shard.ShardId);
    const sequences = records.map((r) => BigInt(r.SequenceNumber));
    assert.deepEqual(sequences, [...sequences].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)));
    read.push(...records.map((r) => hex(r.Data)));
  }
  assert.deepEqual(read.sort(), sent);

  // AT_SEQUENCE_NUMBER starts at exactly that record.
  const { ShardIterator } = await kinesis.send(
    new GetShardIteratorCommand({
      StreamName: STREAM,
      ShardId: one.ShardId,
      ShardIteratorType: "AT_SEQUENCE_NUMBER",
      StartingSequenceNumber: one.SequenceNumber,
    }),
  );
  const at = await kinesis.send(new GetRecordsCommand({ ShardIterator, Limit: 1 }));
  assert.equal(at.Records[0].SequenceNumber, one.SequenceNumber);
  assert.equal(hex(at.Records[0].Data), hex(everyByte));

  // AT_TIMESTAMP, written by this SDK as epoch seconds: a minute ago
  // starts at the shard's first record, an hour ahead gives an empty page
  // with an iterator to go on from.
  const atTime = async (Timestamp) => {
    const { ShardIterator } = await kinesis.send(
      new GetShardIteratorCommand({
        StreamName: STREAM,
        ShardId: one.ShardId,
        ShardIteratorType: "AT_TIMESTAMP",
        Timestamp,
      }),
    );
    return kinesis.send(new GetRecordsCommand({ ShardIterator, Limit: 10 }));
  };
  const past = await atTime(new Date(Date.now() - 60_000));
  assert.ok(past.Records.length > 0);
  assert.ok(past.Records.some((r) => r.SequenceNumber === one.SequenceNumber));
  assert.ok(past.Records[0].ApproximateArrivalTimestamp instanceof Date);
  const future = await atTime(new Date(Date.now() + 3_600_000));
  assert.equal(future.Records.length, 0);
  assert.ok(future.NextShardIterator);

  // Listing, describing and tags.
  const listed = await kinesis.send(new ListStreamsCommand({}));
  assert.ok(listed.StreamNames.includes(STREAM));
  assert.ok(listed.StreamSummaries.some((s) => s.StreamARN === summary.StreamARN));
  const described = await kinesis.send(new DescribeStreamCommand({ StreamName: STREAM }));
  assert.equal(described.StreamDescription.Shards.length, 2);
  await kinesis.send(new AddTagsToStreamCommand({ StreamName: STREAM, Tags: { team: "edge" } }));
  const tags = await kinesis.send(new ListTagsForStreamCommand({ StreamName: STREAM }));
  assert.deepEqual(tags.Tags, [{ Key: "team", Value: "edge" }]);

  // Errors arrive as the SDK's own exception classes.
  assert.equal(
    await errorName(kinesis.send(new DescribeStreamSummaryCommand({ StreamName: "no-such-stream" }))),
    "ResourceNotFoundException",
  );
  assert.equal(
    await errorName(
      kinesis.send(
        new PutRecordCommand({ StreamName: STREAM, PartitionKey: "k".repeat(257), Data: everyByte }),
      ),
    ),
    "ValidationException",
  );
  const wrongSecret = new KinesisClient({
    ...settings,
    credentials: { ...credentials, secretAccessKey: "not-the-secret" },
  });
  assert.equal(
    await errorName(wrongSecret.send(new ListShardsCommand({ StreamName: STREAM }))),
    "InvalidSignatureException",
  );
  const unknownKey = new KinesisClient({
    ...settings,
    credentials: { accessKeyId: "nobody", secretAccessKey: "x" },
  });
  assert.equal(
    await errorName(unknownKey.send(new ListShardsCommand({ StreamName: STREAM }))),
    "UnrecognizedClientException",
  );

  // Enhanced fan-out: SubscribeToShard over HTTP/2, read as an event stream.
  const { Consumer } = await kinesis.send(
    new RegisterStreamConsumerCommand({ StreamARN: summary.StreamARN, ConsumerName: "js" }),
  );
  await until("the consumer to be active", async () => {
    const { ConsumerDescription } = await kinesis.send(
      new DescribeStreamConsumerCommand({ ConsumerARN: Consumer.ConsumerARN }),
    );
    return ConsumerDescription.ConsumerStatus === "ACTIVE";
  });
  const http2 = new KinesisClient({ ...settings, requestHandler: new NodeHttp2Handler() });
  const subscribed = [];
  for (const shard of shards) {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), 20000);
    const response = await http2.send(
      new SubscribeToShardCommand({
        ConsumerARN: Consumer.ConsumerARN,
        ShardId: shard.ShardId,
        StartingPosition: { Type: "TRIM_HORIZON" },
      }),
      { abortSignal: abort.signal },
    );
    for await (const event of response.EventStream) {
      const records = event.SubscribeToShardEvent?.Records ?? [];
      subscribed.push(...records.map((r) => hex(r.Data)));
      if (event.SubscribeToShardEvent?.MillisBehindLatest === 0) break;
    }
    clearTimeout(timer);
  }
  assert.deepEqual(subscribed.sort(), sent);
  http2.destroy();

  await kinesis.send(new DeleteStreamCommand({ StreamName: STREAM, EnforceConsumerDeletion: true }));
  console.log(`ok: ${read.length} records put, read and subscribed through the AWS SDK for JavaScript`);
}

main().catch((error) => {
  console.error(error);
  process.exitCode = 1;
});
