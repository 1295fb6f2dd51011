//! Reading and writing the socket, with QEMU's error texts
//! (io/channel.c `qio_channel_read_all`, io/channel-socket.c, and
//! include/block/nbd.h `nbd_read` with its "Failed to read %s: " prefix).

use std::io::{ErrorKind, Read, Write};

use crate::error::{errno_of, strerror};

/// The message QEMU's channel gives for a failed read.
pub fn read_error(e: &std::io::Error) -> String {
    if e.kind() == ErrorKind::UnexpectedEof {
        "Unexpected end-of-file before all data were read".into()
    } else {
        format!("Unable to read from socket: {}", strerror(errno_of(e)))
    }
}

/// The message QEMU's channel gives for a failed write.
pub fn write_error(e: &std::io::Error) -> String {
    format!("Unable to write to socket: {}", strerror(errno_of(e)))
}

/// `nbd_read`: fills `buf`; `desc` names what was read in the error.
pub fn read_exact<S: Read>(s: &mut S, buf: &mut [u8], desc: Option<&str>) -> Result<(), String> {
    s.read_exact(buf).map_err(|e| match desc {
        Some(d) => format!("Failed to read {d}: {}", read_error(&e)),
        None => read_error(&e),
    })
}

pub fn read_u32<S: Read>(s: &mut S, desc: &str) -> Result<u32, String> {
    let mut b = [0u8; 4];
    read_exact(s, &mut b, Some(desc))?;
    Ok(u32::from_be_bytes(b))
}

pub fn read_u64<S: Read>(s: &mut S, desc: &str) -> Result<u64, String> {
    let mut b = [0u8; 8];
    read_exact(s, &mut b, Some(desc))?;
    Ok(u64::from_be_bytes(b))
}

/// Reads `len` bytes into a buffer that grows as they arrive, so a client
/// announcing a large payload and sending little costs little memory.
pub fn read_payload<S: Read>(s: &mut S, len: u32, desc: Option<&str>) -> Result<Vec<u8>, String> {
    let mut v = Vec::new();
    let got = s
        .by_ref()
        .take(u64::from(len))
        .read_to_end(&mut v)
        .map_err(|e| match desc {
            Some(d) => format!("Failed to read {d}: {}", read_error(&e)),
            None => read_error(&e),
        })?;
    if got != len as usize {
        let e = std::io::Error::from(ErrorKind::UnexpectedEof);
        return Err(match desc {
            Some(d) => format!("Failed to read {d}: {}", read_error(&e)),
            None => read_error(&e),
        });
    }
    Ok(v)
}

/// Writes every part in order.
pub fn write_all<S: Write>(s: &mut S, parts: &[&[u8]]) -> Result<(), String> {
    for p in parts {
        s.write_all(p).map_err(|e| write_error(&e))?;
    }
    Ok(())
}

/// A stream with bytes put back in front of it: what a client sent past
/// the end of an option QEMU did not read to its end is read again as the
/// start of the next option.
pub struct Pushback<'a, S> {
    pub inner: &'a mut S,
    pub front: Vec<u8>,
}

impl<S: Read> Read for Pushback<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.front.is_empty() {
            return self.inner.read(buf);
        }
        let n = buf.len().min(self.front.len());
        buf[..n].copy_from_slice(&self.front[..n]);
        self.front.drain(..n);
        Ok(n)
    }
}

impl<S: Write> Write for Pushback<'_, S> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
