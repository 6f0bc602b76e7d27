//! What the export macros call: keeps the plugin instance between calls and
//! turns batches into per-record calls.

use std::any::Any;
use std::cell::RefCell;

use weir_proto::batch::InputReader;

use crate::{Config, Output, Processor};

thread_local! {
    /// The plugin built by `init` (a Wasm instance is single-threaded).
    static INSTANCE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

pub fn init<P: Processor>(config: Vec<(String, String)>) -> Result<(), String> {
    let plugin = P::init(&Config::new(config)).map_err(|e| e.0)?;
    INSTANCE.with(|instance| *instance.borrow_mut() = Some(Box::new(plugin)));
    Ok(())
}

fn with_plugin<P: Processor, T>(
    call: impl FnOnce(&mut P) -> Result<T, String>,
) -> Result<T, String> {
    INSTANCE.with(|instance| {
        let mut instance = instance.borrow_mut();
        let plugin = instance
            .as_mut()
            .and_then(|plugin| plugin.downcast_mut::<P>())
            .ok_or_else(|| "the host called the plugin before init".to_owned())?;
        call(plugin)
    })
}

/// Runs `call` with the state cache on, flushing the changes to the host
/// when it returns `Ok` (a failed call's writes are dropped by the host
/// anyway, so they need not cross).
fn with_state_cache<T>(call: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    crate::state::begin_call();
    let result = call();
    if result.is_ok() {
        crate::state::end_call();
    }
    result
}

pub fn process<P: Processor>(batch: &[u8]) -> Result<Vec<u8>, String> {
    with_state_cache(|| process_batch::<P>(batch))
}

fn process_batch<P: Processor>(batch: &[u8]) -> Result<Vec<u8>, String> {
    with_plugin::<P, _>(|plugin| {
        let records = InputReader::new(batch).map_err(|e| format!("bad input batch: {e}"))?;
        let mut out = Output::new();
        for (index, record) in records.enumerate() {
            let record = record.map_err(|e| format!("bad input batch: {e}"))?;
            out.input_index = index as u32;
            if let Err(error) = plugin.process(&record, &mut out) {
                out.writer.error(out.input_index, error.message());
            }
        }
        Ok(out.writer.finish())
    })
}

pub fn tick<P: Processor>(now_ms: u64) -> Result<Vec<u8>, String> {
    with_state_cache(|| {
        with_plugin::<P, _>(|plugin| {
            let mut out = Output::new();
            plugin.tick(now_ms, &mut out).map_err(|e| e.0)?;
            Ok(out.writer.finish())
        })
    })
}
