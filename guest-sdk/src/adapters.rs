//! The simple kinds, each turned into a [`Processor`] by an adapter.

use crate::{Config, Output, Processor, Record};

/// Keeps or drops each record.
pub trait Filter: Sized + 'static {
    fn init(config: &Config) -> Result<Self, String>;
    fn keep(&mut self, record: &Record<'_>) -> Result<bool, String>;
}

/// Turns each record into one new record (same partition key).
pub trait Map: Sized + 'static {
    fn init(config: &Config) -> Result<Self, String>;
    fn map(&mut self, record: &Record<'_>) -> Result<Vec<u8>, String>;
}

/// Turns each record into zero or one new record (same partition key).
pub trait FilterMap: Sized + 'static {
    fn init(config: &Config) -> Result<Self, String>;
    fn filter_map(&mut self, record: &Record<'_>) -> Result<Option<Vec<u8>>, String>;
}

pub struct FilterProcessor<F>(F);
pub struct MapProcessor<M>(M);
pub struct FilterMapProcessor<M>(M);

impl<F: Filter> Processor for FilterProcessor<F> {
    fn init(config: &Config) -> Result<Self, String> {
        F::init(config).map(Self)
    }

    fn process(&mut self, record: &Record<'_>, out: &mut Output) -> Result<(), String> {
        if self.0.keep(record)? {
            out.keep();
        }
        Ok(())
    }
}

impl<M: Map> Processor for MapProcessor<M> {
    fn init(config: &Config) -> Result<Self, String> {
        M::init(config).map(Self)
    }

    fn process(&mut self, record: &Record<'_>, out: &mut Output) -> Result<(), String> {
        let data = self.0.map(record)?;
        out.emit(&data);
        Ok(())
    }
}

impl<M: FilterMap> Processor for FilterMapProcessor<M> {
    fn init(config: &Config) -> Result<Self, String> {
        M::init(config).map(Self)
    }

    fn process(&mut self, record: &Record<'_>, out: &mut Output) -> Result<(), String> {
        if let Some(data) = self.0.filter_map(record)? {
            out.emit(&data);
        }
        Ok(())
    }
}
