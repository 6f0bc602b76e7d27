//! Primitive encoders and a bounds-checked reader over a frame body.
//!
//! Integers are little-endian. A string is a `u16` byte length and UTF-8; a
//! byte blob is a `u32` length and the bytes; an option is a `u8` tag (0 =
//! none, 1 = some) then the value.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::DecodeError;

/// Reads fields from one frame body. Every read checks the remaining length,
/// so a truncated or lying frame yields [`DecodeError`], never a panic.
pub(crate) struct Reader {
    body: Bytes,
}

impl Reader {
    pub(crate) fn new(body: Bytes) -> Self {
        Self { body }
    }

    fn need(&self, bytes: usize, field: &'static str) -> Result<(), DecodeError> {
        if self.body.remaining() < bytes {
            return Err(DecodeError::Truncated { field });
        }
        Ok(())
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        self.need(1, field)?;
        Ok(self.body.get_u8())
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        self.need(2, field)?;
        Ok(self.body.get_u16_le())
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.need(4, field)?;
        Ok(self.body.get_u32_le())
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        self.need(8, field)?;
        Ok(self.body.get_u64_le())
    }

    pub(crate) fn u128(&mut self, field: &'static str) -> Result<u128, DecodeError> {
        self.need(16, field)?;
        Ok(self.body.get_u128_le())
    }

    pub(crate) fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(DecodeError::InvalidTag { field, tag }),
        }
    }

    pub(crate) fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let len = usize::from(self.u16(field)?);
        self.need(len, field)?;
        let raw = self.body.split_to(len);
        String::from_utf8(raw.to_vec()).map_err(|_| DecodeError::InvalidUtf8 { field })
    }

    /// A length-prefixed blob, sliced out of the frame without copying.
    pub(crate) fn blob(&mut self, field: &'static str) -> Result<Bytes, DecodeError> {
        let len = self.u32(field)? as usize;
        self.need(len, field)?;
        Ok(self.body.split_to(len))
    }

    pub(crate) fn option<T>(
        &mut self,
        field: &'static str,
        read: impl FnOnce(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Option<T>, DecodeError> {
        if self.bool(field)? {
            Ok(Some(read(self)?))
        } else {
            Ok(None)
        }
    }

    /// A `u32` element count, checked against what the remaining bytes could
    /// hold so a hostile count cannot make the decoder pre-allocate gigabytes.
    pub(crate) fn count(
        &mut self,
        field: &'static str,
        min_element_bytes: usize,
    ) -> Result<usize, DecodeError> {
        let count = self.u32(field)? as usize;
        if count.saturating_mul(min_element_bytes.max(1)) > self.body.remaining() {
            return Err(DecodeError::Truncated { field });
        }
        Ok(count)
    }

    /// Everything not yet read.
    pub(crate) fn rest(&mut self) -> Bytes {
        self.body.split_off(0)
    }

    /// Every byte of a body must be accounted for: trailing bytes mean the
    /// peer and we disagree about the layout.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if self.body.has_remaining() {
            return Err(DecodeError::TrailingBytes {
                count: self.body.remaining(),
            });
        }
        Ok(())
    }
}

pub(crate) fn put_string(buf: &mut BytesMut, value: &str) {
    // Callers validate lengths before encoding; a longer string is truncated
    // to the encodable maximum rather than producing a corrupt frame.
    let bytes = value.as_bytes();
    let len = bytes.len().min(usize::from(u16::MAX));
    buf.put_u16_le(len as u16);
    buf.put_slice(&bytes[..len]);
}

pub(crate) fn put_blob(buf: &mut BytesMut, value: &[u8]) {
    buf.put_u32_le(value.len() as u32);
    buf.put_slice(value);
}

pub(crate) fn put_option<T>(
    buf: &mut BytesMut,
    value: Option<T>,
    put: impl FnOnce(&mut BytesMut, T),
) {
    match value {
        Some(value) => {
            buf.put_u8(1);
            put(buf, value);
        }
        None => buf.put_u8(0),
    }
}
