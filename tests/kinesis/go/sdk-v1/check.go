// The AWS SDK for Go (v1, as Debian packages it: golang-github-aws-aws-sdk-go-dev),
// unchanged, against Weir's Kinesis API: its own SigV4 signer, JSON
// protocol, waiters, error codes and SubscribeToShard event-stream reader.
// It is the SDK of Go producers and of Fluent Bit's Go Kinesis plugin.
// tests/it/kinesis.rs builds and runs this with WEIR_KINESIS_ENDPOINT and
// AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY set to a Weir token; any failed
// check exits non-zero saying what differed.
package main

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go/aws"
	"github.com/aws/aws-sdk-go/aws/awserr"
	"github.com/aws/aws-sdk-go/aws/credentials"
	"github.com/aws/aws-sdk-go/aws/session"
	"github.com/aws/aws-sdk-go/service/kinesis"

	check "weircheck"
)

const stream = "go-sdk"

func client(key, secret string) *kinesis.Kinesis {
	config := aws.NewConfig().
		WithEndpoint(os.Getenv("WEIR_KINESIS_ENDPOINT")).
		WithRegion("us-east-1").
		WithCredentials(credentials.NewStaticCredentials(key, secret, "")).
		WithMaxRetries(0)
	return kinesis.New(session.Must(session.NewSession(config)))
}

// The AWS error code of a call that must fail.
func errorCode(err error) string {
	if failure, ok := err.(awserr.Error); ok {
		return failure.Code()
	}
	if err == nil {
		return "no error"
	}
	return err.Error()
}

func readShard(k *kinesis.Kinesis, shardID string) []*kinesis.Record {
	iterator, err := k.GetShardIterator(&kinesis.GetShardIteratorInput{
		StreamName:        aws.String(stream),
		ShardId:           aws.String(shardID),
		ShardIteratorType: aws.String(kinesis.ShardIteratorTypeTrimHorizon),
	})
	check.Must(err, "GetShardIterator")
	var records []*kinesis.Record
	next := iterator.ShardIterator
	for {
		page, err := k.GetRecords(&kinesis.GetRecordsInput{ShardIterator: next, Limit: aws.Int64(4)})
		check.Must(err, "GetRecords")
		records = append(records, page.Records...)
		next = page.NextShardIterator
		if len(page.Records) == 0 && aws.Int64Value(page.MillisBehindLatest) == 0 {
			return records
		}
	}
}

func main() {
	key, secret := os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY")
	k := client(key, secret)

	_, err := k.CreateStream(&kinesis.CreateStreamInput{StreamName: aws.String(stream), ShardCount: aws.Int64(2)})
	check.Must(err, "CreateStream")
	check.Must(k.WaitUntilStreamExists(&kinesis.DescribeStreamInput{StreamName: aws.String(stream)}), "the SDK's waiter")
	summary, err := k.DescribeStreamSummary(&kinesis.DescribeStreamSummaryInput{StreamName: aws.String(stream)})
	check.Must(err, "DescribeStreamSummary")
	check.Equal(aws.Int64Value(summary.StreamDescriptionSummary.OpenShardCount), int64(2), "open shards")
	streamARN := summary.StreamDescriptionSummary.StreamARN
	listed, err := k.ListShards(&kinesis.ListShardsInput{StreamName: aws.String(stream)})
	check.Must(err, "ListShards")
	var shardIDs []string
	for _, shard := range listed.Shards {
		shardIDs = append(shardIDs, aws.StringValue(shard.ShardId))
	}
	check.Equal(shardIDs, []string{"shardId-000000000000", "shardId-000000000001"}, "shard ids")

	// Every byte value, then ten records in one PutRecords.
	everyByte := check.EveryByte()
	one, err := k.PutRecord(&kinesis.PutRecordInput{
		StreamName: aws.String(stream), PartitionKey: aws.String("bytes"), Data: everyByte,
	})
	check.Must(err, "PutRecord")
	check.Sequence(aws.StringValue(one.SequenceNumber))
	keys, data := check.TenRecords()
	sent := check.Hex(append(data, everyByte))
	var entries []*kinesis.PutRecordsRequestEntry
	for i := range keys {
		entries = append(entries, &kinesis.PutRecordsRequestEntry{PartitionKey: aws.String(keys[i]), Data: data[i]})
	}
	put, err := k.PutRecords(&kinesis.PutRecordsInput{StreamName: aws.String(stream), Records: entries})
	check.Must(err, "PutRecords")
	check.Equal(aws.Int64Value(put.FailedRecordCount), int64(0), "failed records")
	check.Equal(len(put.Records), 10, "PutRecords results")

	// Read back over both shards: every record, byte for byte, in order.
	var read [][]byte
	for _, shardID := range shardIDs {
		var sequences []string
		for _, record := range readShard(k, shardID) {
			sequences = append(sequences, aws.StringValue(record.SequenceNumber))
			read = append(read, record.Data)
		}
		check.InOrder(sequences, shardID)
	}
	check.Equal(check.Hex(read), sent, "records read back")

	// AT_SEQUENCE_NUMBER starts at exactly that record; AT_TIMESTAMP a
	// minute ago at the shard's first, an hour ahead gives an empty page.
	at, err := k.GetShardIterator(&kinesis.GetShardIteratorInput{
		StreamName: aws.String(stream), ShardId: one.ShardId,
		ShardIteratorType:      aws.String(kinesis.ShardIteratorTypeAtSequenceNumber),
		StartingSequenceNumber: one.SequenceNumber,
	})
	check.Must(err, "GetShardIterator AT_SEQUENCE_NUMBER")
	page, err := k.GetRecords(&kinesis.GetRecordsInput{ShardIterator: at.ShardIterator, Limit: aws.Int64(1)})
	check.Must(err, "GetRecords AT_SEQUENCE_NUMBER")
	check.Equal(aws.StringValue(page.Records[0].SequenceNumber), aws.StringValue(one.SequenceNumber), "record at the sequence")
	if !bytes.Equal(page.Records[0].Data, everyByte) {
		check.Fail("the record at the sequence number differs")
	}
	atTime := func(when time.Time) *kinesis.GetRecordsOutput {
		iterator, err := k.GetShardIterator(&kinesis.GetShardIteratorInput{
			StreamName: aws.String(stream), ShardId: one.ShardId,
			ShardIteratorType: aws.String(kinesis.ShardIteratorTypeAtTimestamp),
			Timestamp:         aws.Time(when),
		})
		check.Must(err, "GetShardIterator AT_TIMESTAMP")
		page, err := k.GetRecords(&kinesis.GetRecordsInput{ShardIterator: iterator.ShardIterator, Limit: aws.Int64(10)})
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
	streams, err := k.ListStreams(&kinesis.ListStreamsInput{})
	check.Must(err, "ListStreams")
	found := false
	for _, name := range streams.StreamNames {
		found = found || aws.StringValue(name) == stream
	}
	if !found {
		check.Fail("ListStreams lacks %s", stream)
	}
	described, err := k.DescribeStream(&kinesis.DescribeStreamInput{StreamName: aws.String(stream)})
	check.Must(err, "DescribeStream")
	check.Equal(len(described.StreamDescription.Shards), 2, "described shards")
	_, err = k.AddTagsToStream(&kinesis.AddTagsToStreamInput{
		StreamName: aws.String(stream), Tags: map[string]*string{"team": aws.String("edge")},
	})
	check.Must(err, "AddTagsToStream")
	tags, err := k.ListTagsForStream(&kinesis.ListTagsForStreamInput{StreamName: aws.String(stream)})
	check.Must(err, "ListTagsForStream")
	check.Equal(len(tags.Tags), 1, "tags")
	check.Equal(aws.StringValue(tags.Tags[0].Key)+"="+aws.StringValue(tags.Tags[0].Value), "team=edge", "tag")

	// Errors arrive with the codes the SDK's constants name. The SDK checks
	// only lower bounds itself: 501 records are the server's to refuse.
	_, err = k.DescribeStreamSummary(&kinesis.DescribeStreamSummaryInput{StreamName: aws.String("no-such-stream")})
	check.Equal(errorCode(err), kinesis.ErrCodeResourceNotFoundException, "a missing stream")
	tooMany := make([]*kinesis.PutRecordsRequestEntry, 501)
	for i := range tooMany {
		tooMany[i] = &kinesis.PutRecordsRequestEntry{PartitionKey: aws.String("k"), Data: []byte("x")}
	}
	_, err = k.PutRecords(&kinesis.PutRecordsInput{StreamName: aws.String(stream), Records: tooMany})
	check.Equal(errorCode(err), "ValidationException", "501 records")
	if !strings.Contains(err.Error(), "500") {
		check.Fail("the validation message does not name the limit: %v", err)
	}
	_, err = client(key, "not-the-secret").ListShards(&kinesis.ListShardsInput{StreamName: aws.String(stream)})
	check.Equal(errorCode(err), "InvalidSignatureException", "a wrong secret")
	_, err = client("nobody", "x").ListShards(&kinesis.ListShardsInput{StreamName: aws.String(stream)})
	check.Equal(errorCode(err), "UnrecognizedClientException", "an unknown key")

	// Enhanced fan-out: SubscribeToShard, read as the SDK's event stream.
	registered, err := k.RegisterStreamConsumer(&kinesis.RegisterStreamConsumerInput{
		StreamARN: streamARN, ConsumerName: aws.String("go"),
	})
	check.Must(err, "RegisterStreamConsumer")
	consumerARN := registered.Consumer.ConsumerARN
	for attempt := 0; ; attempt++ {
		consumer, err := k.DescribeStreamConsumer(&kinesis.DescribeStreamConsumerInput{ConsumerARN: consumerARN})
		check.Must(err, "DescribeStreamConsumer")
		if aws.StringValue(consumer.ConsumerDescription.ConsumerStatus) == kinesis.ConsumerStatusActive {
			break
		}
		if attempt == 100 {
			check.Fail("the consumer did not become active")
		}
		time.Sleep(100 * time.Millisecond)
	}
	var subscribed [][]byte
	for _, shardID := range shardIDs {
		subscription, err := k.SubscribeToShard(&kinesis.SubscribeToShardInput{
			ConsumerARN: consumerARN, ShardId: aws.String(shardID),
			StartingPosition: &kinesis.StartingPosition{Type: aws.String(kinesis.ShardIteratorTypeTrimHorizon)},
		})
		check.Must(err, "SubscribeToShard")
		deadline := time.After(20 * time.Second)
	events:
		for {
			select {
			case event, open := <-subscription.GetStream().Events():
				if !open {
					check.Must(subscription.GetStream().Err(), "the event stream")
					check.Fail("the event stream of %s ended early", shardID)
				}
				update, ok := event.(*kinesis.SubscribeToShardEvent)
				if !ok {
					continue
				}
				for _, record := range update.Records {
					subscribed = append(subscribed, record.Data)
				}
				if aws.Int64Value(update.MillisBehindLatest) == 0 {
					break events
				}
			case <-deadline:
				check.Fail("no caught-up event from %s within 20 s", shardID)
			}
		}
		check.Must(subscription.GetStream().Close(), "closing the event stream")
	}
	check.Equal(check.Hex(subscribed), sent, "records subscribed")

	_, err = k.DeleteStream(&kinesis.DeleteStreamInput{StreamName: aws.String(stream), EnforceConsumerDeletion: aws.Bool(true)})
	check.Must(err, "DeleteStream")
	fmt.Printf("ok: %d records put, read and subscribed through the AWS SDK for Go\n", len(read))
}
