//! Arbitrary bytes as a plugin's input batch and as its output: decoding
//! never panics, and a decoded input batch re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_proto::batch::{InputReader, InputWriter, OutputReader};

fuzz_target!(|data: &[u8]| {
    for entry in OutputReader::new(data) {
        if entry.is_err() {
            break;
        }
    }
    let Ok(reader) = InputReader::new(data) else {
        return;
    };
    let records: Result<Vec<_>, _> = reader.collect();
    if let Ok(records) = records {
        let mut writer = InputWriter::new();
        for record in &records {
            writer.push(record);
        }
        assert_eq!(writer.finish(), data, "a valid batch re-encodes identically");
    }
});
