// The AWS SDK for Go v2 (as Debian packages it: golang-github-aws-aws-sdk-go-v2-dev),
// unchanged, against Weir's Kinesis API: its own SigV4 signer, JSON
// protocol, waiters, typed errors and SubscribeToShard event-stream reader.
// tests/it/kinesis.rs builds and runs this with WEIR_KINESIS_ENDPOINT and
// AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY set to a Weir token; any failed
// check exits non-zero saying what differed.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/aws/smithy-go"

	check "weircheck"
)

const stream = "go-sdk-v2"

var ctx = context.Background()

func client(key, secret string) *kinesis.Client {
	return kinesis.New(kinesis.Options{
		Region:           "us-east-1",
		Credentials:      credentials.NewStaticCredentialsProvider(key, secret, ""),
		EndpointResolver: kinesis.EndpointResolverFromURL(os.Getenv("WEIR_KINESIS_ENDPOINT")),
		RetryMaxAttempts: 1,
	})
}

// The AWS error code of a call that must fail.
func errorCode(err error) string {
	var failure smithy.APIError
	if errors.As(err, &failure) {
		return failure.ErrorCode()
	}
	if err == nil {
		return "no error"
	}
	return err.Error()
}

func readShard(k *kinesis.Client, shardID string) []types.Record {
	iterator, err := k.GetShardIterator(ctx, &kinesis.GetShardIteratorInput{
		StreamName:        aws.String(stream),
		ShardId:           aws.String(shardID),
		ShardIteratorType: types.ShardIteratorTypeTrimHorizon,
	})
	check.Must(err, "GetShardIterator")
	var records []types.Record
	next := iterator.ShardIterator
	for {
		page, err := k.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: next, Limit: aws.Int32(4)})
		check.Must(err, "GetRecords")
		records = append(records, page.Records...)
		next = page.NextShardIterator
		if len(page.Records) == 0 && aws.ToInt64(page.MillisBehindLatest) == 0 {
			return records
		}
	}
}

func main() {
	key, secret := os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY")
	k := client(key, secret)

	_, err := k.CreateStream(ctx, &kinesis.CreateStreamInput{StreamName: aws.String(stream), ShardCount: aws.Int32(2)})
	check.Must(err, "CreateStream")
	waiter := kinesis.NewStreamExistsWaiter(k)
	check.Must(waiter.Wait(ctx, &kinesis.DescribeStreamInput{StreamName: aws.String(stream)}, 30*time.Second), "the SDK's waiter")
	summary, err := k.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(stream)})
	check.Must(err, "DescribeStreamSummary")
	check.Equal(aws.ToInt32(summary.StreamDescriptionSummary.OpenShardCount), int32(2), "open shards")
	streamARN := summary.StreamDescriptionSummary.StreamARN
	listed, err := k.ListShards(ctx, &kinesis.ListShardsInput{StreamName: aws.String(stream)})
	check.Must(err, "ListShards")
	var shardIDs []string
	for _, shard := range listed.Shards {
		shardIDs = append(shardIDs, aws.ToString(shard.ShardId))
	}
	check.Equal(shardIDs, []string{"shardId-000000000000", "shardId-000000000001"}, "shard ids")

	// Every byte value, then ten records in one PutRecords.
	everyByte := check.EveryByte()
	one, err := k.PutRecord(ctx, &kinesis.PutRecordInput{
		StreamName: aws.String(stream), PartitionKey: aws.String("bytes"), Data: everyByte,
	})
	check.Must(err, "PutRecord")
	check.Sequence(aws.ToString(one.SequenceNumber))
	keys, data := check.TenRecords()
	sent := check.Hex(append(data, everyByte))
	var entries []types.PutRecordsRequestEntry
	for i := range keys {
		entries = append(entries, types.PutRecordsRequestEntry{PartitionKey: aws.String(keys[i]), Data: data[i]})
	}
	put, err := k.PutRecords(ctx, &kinesis.PutRecordsInput{StreamName: aws.String(stream), Records: entries})
	check.Must(err, "PutRecords")
	check.Equal(aws.ToInt32(put.FailedRecordCount), int32(0), "failed records")
	check.Equal(len(put.Records), 10, "PutRecords results")

	// Read back over both shards: every record, byte for byte, in order.
	var read [][]byte
	for _, shardID := range shardIDs {
		var sequences []string
		for _, record := range readShard(k, shardID) {
			sequences = append(sequences, aws.ToString(record.SequenceNumber))
			read = append(read, record.Data)
		}
		check.InOrder(sequences, shardID)
	}
	check.Equal(check.Hex(read), sent, "records read back")

	// AT_SEQUENCE_NUMBER starts at exactly that record; AT_TIMESTAMP a
	// minute ago at the shard's first, an hour ahead gives an empty page.
	at, err := k.GetShardIterator(ctx, &kinesis.GetShardIteratorInput{
		StreamName: aws.String(stream), ShardId: one.ShardId,
		ShardIteratorType:      types.ShardIteratorTypeAtSequenceNumber,
		StartingSequenceNumber: one.SequenceNumber,
	})
	check.Must(err, "GetShardIterator AT_SEQUENCE_NUMBER")
	page, err := k.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: at.ShardIterator, Limit: aws.Int32(1)})
	check.Must(err, "GetRecords AT_SEQUENCE_NUMBER")
	check.Equal(aws.ToString(page.Records[0].SequenceNumber), aws.ToString(one.SequenceNumber), "record at the sequence")
	if !bytes.Equal(page.Records[0].Data, everyByte) {
		check.Fail("the record at the sequence number differs")
	}
	atTime := func(when time.Time) *kinesis.GetRecordsOutput {
		iterator, err := k.GetShardIterator(ctx, &kinesis.GetShardIteratorInput{
			StreamName: aws.String(stream), ShardId: one.ShardId,
			ShardIteratorType: types.ShardIteratorTypeAtTimestamp,
			Timestamp:         aws.Time(when),
		})
		check.Must(err, "GetShardIterator AT_TIMESTAMP")
		page, err := k.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: iterator.ShardIterator, Limit: aws.Int32(10)})
		check.Must(err, "GetRecords AT_TIMESTAMP")
		return page
	}
	past := atTime(time.Now().Add(-time.Minute))
	if len(past.Records) == 0 || past.Records[0].ApproximateArrivalTimestamp == nil {
		check.Fail("AT_TIMESTAMP a minute ago read nothing")
	}
	future := atTime(time.Now().Add(time.Hour))
	check.Equal(len(future.Records), 0, "records an hour ahead")
	if future.NextShardIterator == nil {
		check.Fail("an empty page has no next iterator")
	}

	// Listing, describing and tags.
	streams, err := k.ListStreams(ctx, &kinesis.ListStreamsInput{})
	check.Must(err, "ListStreams")
	found := false
	for _, name := range streams.StreamNames {
		found = found || name == stream
	}
	if !found {
		check.Fail("ListStreams lacks %s", stream)
	}
	described, err := k.DescribeStream(ctx, &kinesis.DescribeStreamInput{StreamName: aws.String(stream)})
	check.Must(err, "DescribeStream")
	check.Equal(len(described.StreamDescription.Shards), 2, "described shards")
	_, err = k.AddTagsToStream(ctx, &kinesis.AddTagsToStreamInput{
		StreamName: aws.String(stream), Tags: map[string]string{"team": "edge"},
	})
	check.Must(err, "AddTagsToStream")
	tags, err := k.ListTagsForStream(ctx, &kinesis.ListTagsForStreamInput{StreamName: aws.String(stream)})
	check.Must(err, "ListTagsForStream")
	check.Equal(len(tags.Tags), 1, "tags")
	check.Equal(aws.ToString(tags.Tags[0].Key)+"="+aws.ToString(tags.Tags[0].Value), "team=edge", "tag")

	// Errors arrive as the SDK's typed errors. It checks no bounds on
	// lists itself: 501 records are the server's to refuse.
	_, err = k.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String("no-such-stream")})
	var missing *types.ResourceNotFoundException
	if !errors.As(err, &missing) {
		check.Fail("a missing stream: got %v, want a ResourceNotFoundException", err)
	}
	tooMany := make([]types.PutRecordsRequestEntry, 501)
	for i := range tooMany {
		tooMany[i] = types.PutRecordsRequestEntry{PartitionKey: aws.String("k"), Data: []byte("x")}
	}
	_, err = k.PutRecords(ctx, &kinesis.PutRecordsInput{StreamName: aws.String(stream), Records: tooMany})
	check.Equal(errorCode(err), "ValidationException", "501 records")
	if !strings.Contains(err.Error(), "500") {
		check.Fail("the validation message does not name the limit: %v", err)
	}
	_, err = client(key, "not-the-secret").ListShards(ctx, &kinesis.ListShardsInput{StreamName: aws.String(stream)})
	check.Equal(errorCode(err), "InvalidSignatureException", "a wrong secret")
	_, err = client("nobody", "x").ListShards(ctx, &kinesis.ListShardsInput{StreamName: aws.String(stream)})
	check.Equal(errorCode(err), "UnrecognizedClientException", "an unknown key")

	// Enhanced fan-out: SubscribeToShard, read as the SDK's event stream.
	registered, err := k.RegisterStreamConsumer(ctx, &kinesis.RegisterStreamConsumerInput{
		StreamARN: streamARN, ConsumerName: aws.String("go-v2"),
	})
	check.Must(err, "RegisterStreamConsumer")
	consumerARN := registered.Consumer.ConsumerARN
	for attempt := 0; ; attempt++ {
		consumer, err := k.DescribeStreamConsumer(ctx, &kinesis.DescribeStreamConsumerInput{ConsumerARN: consumerARN})
		check.Must(err, "DescribeStreamConsumer")
		if consumer.ConsumerDescription.ConsumerStatus == types.ConsumerStatusActive {
			break
		}
		if attempt == 100 {
			check.Fail("the consumer did not become active")
		}
		time.Sleep(100 * time.Millisecond)
	}
	var subscribed [][]byte
	for _, shardID := range shardIDs {
		subscription, err := k.SubscribeToShard(ctx, &kinesis.SubscribeToShardInput{
			ConsumerARN: consumerARN, ShardId: aws.String(shardID),
			StartingPosition: &types.StartingPosition{Type: types.ShardIteratorTypeTrimHorizon},
		})
		check.Must(err, "SubscribeToShard")
		events := subscription.GetStream()
		deadline := time.After(20 * time.Second)
	reading:
		for {
			select {
			case event, open := <-events.Events():
				if !open {
					check.Must(events.Err(), "the event stream")
					check.Fail("the event stream of %s ended early", shardID)
				}
				update, ok := event.(*types.SubscribeToShardEventStreamMemberSubscribeToShardEvent)
				if !ok {
					continue
				}
				for _, record := range update.Value.Records {
					subscribed = append(subscribed, record.Data)
				}
				if aws.ToInt64(update.Value.MillisBehindLatest) == 0 {
					break reading
				}
			case <-deadline:
				check.Fail("no caught-up event from %s within 20 s", shardID)
			}
		}
		check.Must(events.Close(), "closing the event stream")
	}
	check.Equal(check.Hex(subscribed), sent, "records subscribed")

	_, err = k.DeleteStream(ctx, &kinesis.DeleteStreamInput{StreamName: aws.String(stream), EnforceConsumerDeletion: aws.Bool(true)})
	check.Must(err, "DeleteStream")
	fmt.Printf("ok: %d records put, read and subscribed through the AWS SDK for Go v2\n", len(read))
}
