//! A plugin for testing failure policies. Config `mode`:
//! - `ok`: passes records through;
//! - `loop`: loops forever on records whose data contains `bad`;
//! - `alloc`: allocates without bound on records containing `bad`;
//! - `panic`: panics (a trap) on records containing `bad`;
//! - `fail`: returns an error for records containing `bad`;
//! - `oversized`: emits 8 MiB for records containing `bad`;
//! - `print`: writes each record to stdout and passes it through;
//! - `reject`: refuses every config (init error).
//!
//! Records without `bad` pass through unchanged in every mode.

use weir_plugin::{Config, Output, Processor, Record};

pub struct Misbehaving {
    mode: String,
}

impl Processor for Misbehaving {
    fn init(config: &Config) -> Result<Self, String> {
        let mode = config.require("mode")?.to_owned();
        if mode == "reject" {
            return Err("this plugin rejects every config (mode=reject)".into());
        }
        Ok(Self { mode })
    }

    fn process(&mut self, record: &Record<'_>, out: &mut Output) -> Result<(), String> {
        if self.mode == "print" {
            println!(
                "record {}: {}",
                record.sequence,
                String::from_utf8_lossy(record.data)
            );
        }
        let bad = record.data.windows(3).any(|w| w == b"bad");
        if bad {
            match self.mode.as_str() {
                "loop" => loop {
                    std::hint::black_box(&record.data);
                },
                "alloc" => {
                    let mut hoard: Vec<Vec<u8>> = Vec::new();
                    loop {
                        hoard.push(vec![1; 1 << 20]);
                        std::hint::black_box(&hoard);
                    }
                }
                "panic" => panic!("record {} is bad", record.sequence),
                "fail" => return Err(format!("record {} is bad", record.sequence)),
                "oversized" => {
                    out.emit(&vec![b'x'; 8 << 20]);
                    return Ok(());
                }
                _ => {}
            }
        }
        out.emit(record.data);
        Ok(())
    }
}

weir_plugin::export_processor!(Misbehaving);
