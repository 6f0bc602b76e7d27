//! The simple kinds, each turned into a [`Processor`] by an adapter.

use crate::{Config, Error, Output, Processor, Record};

/// Keeps or drops each record.
pub trait Filter: Sized + 'static {
    fn init(config: &Config) -> Result<Self, Error>;
    fn keep(&mut self, record: &Record<'_>) -> Result<bool, Error>;
}

/// Turns each record into one new record (same partition key).
pub trait Map: Sized + 'static {
    fn init(config: &Config) -> Result<Self, Error>;
    fn map(&mut self, record: &Record<'_>) -> Result<Vec<u8>, Error>;
}

/// Turns each record into zero or one new record (same partition key).
pub trait FilterMap: Sized + 'static {
    fn init(config: &Config) -> Result<Self, Error>;
    fn filter_map(&mut self, record: &Record<'_>) -> Result<Option<Vec<u8>>, Error>;
}

pub struct FilterProcessor<F>(F);
pub struct MapProcessor<M>(M);
pub struct FilterMapProcessor<M>(M);

impl<F: Filter> Processor for FilterProcessor<F> {
    fn init(config: &Config) -> Result<Self, Error> {
        F::init(config).map(Self)
    }

    fn process(&mut self, record: &Record<'_>, out: &mut Output) -> Result<(), Error> {
        if self.0.keep(record)? {
            out.keep();
        }
        Ok(())
    }
}

impl<M: Map> Processor for MapProcessor<M> {
    fn init(config: &Config) -> Result<Self, Error> {
        M::init(config).map(Self)
    }

    fn process(&mut self, record: &Record<'_>, out: &mut Output) -> Result<(), Error> {
        let data = self.0.map(record)?;
        out.emit(&data);
        Ok(())
    }
}

impl<M: FilterMap> Processor for FilterMapProcessor<M> {
    fn init(config: &Config) -> Result<Self, Error> {
        M::init(config).map(Self)
    }

    fn process(&mut self, record: &Record<'_>, out: &mut Output) -> Result<(), Error> {
        if let Some(data) = self.0.filter_map(record)? {
            out.emit(&data);
        }
        Ok(())
    }
}
