//! Exports Weir's `processor` interface correctly but also imports one the
//! host does not provide (a stand-in for a plugin that wants sockets):
//! Weir must refuse it at upload, naming the import.

wit_bindgen::generate!({
    inline: r#"
        package weir:plugin@0.1.0;

        interface processor {
            init: func(config: list<tuple<string, string>>) -> result<_, string>;
            process: func(batch: list<u8>) -> result<list<u8>, string>;
            tick: func(now-ms: u64) -> result<list<u8>, string>;
        }

        interface network {
            connect: func(host: string) -> u32;
        }

        world bad-import {
            import network;
            export processor;
        }
    "#,
});

struct BadImport;

impl exports::weir::plugin::processor::Guest for BadImport {
    fn init(_config: Vec<(String, String)>) -> Result<(), String> {
        Ok(())
    }

    fn process(batch: Vec<u8>) -> Result<Vec<u8>, String> {
        weir::plugin::network::connect("example.invalid");
        Ok(batch)
    }

    fn tick(_now_ms: u64) -> Result<Vec<u8>, String> {
        Ok(Vec::new())
    }
}

export!(BadImport);
