//! A plugin for testing failure policies. Config `mode`:
//! - `ok`: passes records through;
//! - `loop`: loops forever on records whose data contains `bad`;
//! - `alloc`: allocates without bound on records containing `bad`;
//! - `panic`: panics (a trap) on records containing `bad`;
//! - `fail`: returns an error for records containing `bad`;
//! - `oversized`: emits 8 MiB for records containing `bad`;
//! - `print`: writes each record to stdout and passes it through;
//! - `reject`: refuses every config (init error);
//! - `sleep`: sleeps an hour on records containing `bad`;
//! - `sleep-init`: sleeps an hour in `init`;
//! - `slow-init`: spins a second in `init`, panics on `bad` (each trap
//!   makes the host create and init a new instance);
//! - `amplify`: answers records containing `bad` with 200 000 outputs;
//! - `log-spam`: logs 100 000 lines for records containing `bad`;
//! - `hoard`: keeps 8 MiB of memory for as long as the instance lives.
//!
//! Records without `bad` pass through unchanged in every mode.

use weir_plugin::{Config, Error, Output, Processor, Record};

pub struct Misbehaving {
    mode: String,
    _hoard: Vec<u8>,
}

impl Processor for Misbehaving {
    fn init(config: &Config) -> Result<Self, Error> {
        let mode = config.require("mode")?.to_owned();
        match mode.as_str() {
            "reject" => return Err("this plugin rejects every config (mode=reject)".into()),
            "sleep-init" => std::thread::sleep(std::time::Duration::from_secs(3600)),
            "slow-init" => {
                let started = std::time::Instant::now();
                while started.elapsed() < std::time::Duration::from_secs(1) {
                    std::hint::black_box(started);
                }
            }
            _ => {}
        }
        let hoard = if mode == "hoard" {
            std::hint::black_box(vec![1; 8 << 20])
        } else {
            Vec::new()
        };
        Ok(Self {
            mode,
            _hoard: hoard,
        })
    }

    fn process(&mut self, record: &Record<'_>, out: &mut Output) -> Result<(), Error> {
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
                "panic" | "slow-init" => panic!("record {} is bad", record.sequence),
                "sleep" => std::thread::sleep(std::time::Duration::from_secs(3600)),
                "amplify" => {
                    for _ in 0..200_000 {
                        out.emit(b"x");
                    }
                    return Ok(());
                }
                "log-spam" => {
                    for line in 0..100_000 {
                        weir_plugin::log(weir_plugin::LogLevel::Info, &format!("spam {line}\n"));
                    }
                }
                "fail" => return Err(format!("record {} is bad", record.sequence).into()),
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
