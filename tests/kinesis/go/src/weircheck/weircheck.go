// Package weircheck holds what the AWS SDK for Go checks (sdk-v1, sdk-v2)
// share: failing with a message, comparing, and the records they put.
// tests/it/support.rs builds them with this directory's parent on GOPATH.
package weircheck

import (
	"encoding/hex"
	"fmt"
	"math/big"
	"os"
	"reflect"
	"sort"
)

// Fail prints what differed and exits non-zero.
func Fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "check failed: "+format+"\n", args...)
	os.Exit(1)
}

// Must fails when a call that must succeed did not.
func Must(err error, what string) {
	if err != nil {
		Fail("%s: %v", what, err)
	}
}

// Equal fails unless got and want are deeply equal.
func Equal(got, want interface{}, what string) {
	if !reflect.DeepEqual(got, want) {
		Fail("%s: got %v, want %v", what, got, want)
	}
}

// Sequence reads a sequence number, which must be a decimal number.
func Sequence(number string) *big.Int {
	value, ok := new(big.Int).SetString(number, 10)
	if !ok {
		Fail("sequence number %q is not a decimal number", number)
	}
	return value
}

// EveryByte is a record holding every byte value once.
func EveryByte() []byte {
	data := make([]byte, 256)
	for i := range data {
		data[i] = byte(i)
	}
	return data
}

// TenRecords are the data of the ten records put in one PutRecords, with
// their partition keys.
func TenRecords() (keys []string, data [][]byte) {
	for i := 0; i < 10; i++ {
		keys = append(keys, fmt.Sprintf("user-%d", i))
		data = append(data, []byte(fmt.Sprintf(`{"i":%d}`, i)))
	}
	return keys, data
}

// Hex is what the checks compare records by: their data in hex, sorted.
func Hex(data [][]byte) []string {
	out := make([]string, 0, len(data))
	for _, d := range data {
		out = append(out, hex.EncodeToString(d))
	}
	sort.Strings(out)
	return out
}

// InOrder fails unless the sequence numbers increase.
func InOrder(sequences []string, shard string) {
	for i := 1; i < len(sequences); i++ {
		if Sequence(sequences[i-1]).Cmp(Sequence(sequences[i])) >= 0 {
			Fail("shard %s: sequence numbers out of order", shard)
		}
	}
}
