//! The `null-co` and `null-aio` protocol drivers (QEMU 7.2 block/null.c):
//! a disk of `size` bytes (1 GiB by default) that stores nothing. Writes
//! succeed, reads leave the buffer as it was unless `read-zeroes=on`, and
//! every request waits `latency-ns` first.

use std::sync::Arc;
use std::time::Duration;

use crate::error::BlockError;
use crate::io::IoBuf;
use crate::node::{Driver, FormatIo};

pub struct NullDriver {
    /// `null-co` or `null-aio`.
    name: &'static str,
    size: u64,
    io: Arc<NullIo>,
    /// Only `filename`, `driver` and `latency-ns` were given: the node's
    /// file name is `null-co://` (`null_refresh_filename`), else `json:`.
    plain: bool,
    /// The options as given, for the `json:` file name.
    given: NullOptions,
}

/// `null_file_open`'s options.
#[derive(Clone)]
pub struct NullOptions {
    pub filename: Option<String>,
    pub size: Option<u64>,
    pub latency_ns: Option<i64>,
    pub read_zeroes: Option<bool>,
}

impl NullDriver {
    pub fn open(name: &'static str, o: NullOptions) -> Result<Self, BlockError> {
        // null_co_parse_filename / null_aio_parse_filename.
        if let Some(f) = &o.filename {
            if *f != format!("{name}://") {
                return Err(BlockError::new(format!(
                    "The only allowed filename for this driver is '{name}://'"
                )));
            }
        }
        let latency = o.latency_ns.unwrap_or(0);
        if latency < 0 {
            return Err(BlockError::new("latency-ns is invalid"));
        }
        let read_zeroes = o.read_zeroes.unwrap_or(false);
        Ok(NullDriver {
            name,
            size: o.size.unwrap_or(1 << 30),
            plain: o.size.is_none() && o.read_zeroes.is_none(),
            io: Arc::new(NullIo {
                latency: Duration::from_nanos(latency as u64),
                read_zeroes,
            }),
            given: o,
        })
    }
}

impl Driver for NullDriver {
    fn format_name(&self) -> &'static str {
        self.name
    }

    fn filename(&self) -> String {
        if self.plain {
            return format!("{}://", self.name);
        }
        // bdrv_refresh_filename's json: name from the full open options.
        let mut m = serde_json::Map::new();
        m.insert("driver".into(), self.name.into());
        let g = &self.given;
        if let Some(l) = g.latency_ns {
            m.insert("latency-ns".into(), l.into());
        }
        if let Some(z) = g.read_zeroes {
            m.insert("read-zeroes".into(), z.into());
        }
        if let Some(s) = g.size {
            m.insert("size".into(), s.into());
        }
        format!(
            "json:{}",
            crate::qcow2_node::qobject_json(&serde_json::Value::Object(m))
        )
    }

    fn size(&self) -> Result<u64, BlockError> {
        Ok(self.size)
    }

    /// `null_allocated_file_size`.
    fn actual_size(&self) -> Option<u64> {
        Some(0)
    }

    /// No `bdrv_co_truncate` and nothing filtered.
    fn truncate(&self, _size: u64) -> Result<(), BlockError> {
        Err(BlockError::new(
            "Image format driver does not support resize",
        ))
    }

    fn child_perm(&self, _role: &str, p: u64, shared: u64) -> (u64, u64) {
        (p, shared)
    }

    fn format_io(&self) -> Option<Arc<dyn FormatIo>> {
        Some(self.io.clone())
    }

    /// No `bdrv_get_info`: query-block shows no `dirty-flag`.
    fn has_info(&self) -> bool {
        false
    }
}

struct NullIo {
    latency: Duration,
    read_zeroes: bool,
}

impl NullIo {
    /// `null_co_common`.
    fn wait(&self) {
        if !self.latency.is_zero() {
            std::thread::sleep(self.latency);
        }
    }
}

impl FormatIo for NullIo {
    fn read(&self, _off: u64, buf: &mut [u8]) -> Result<(), i32> {
        if self.read_zeroes {
            buf.fill(0);
        }
        self.wait();
        Ok(())
    }
    fn readv(&self, _off: u64, bufs: &[IoBuf]) -> Result<(), i32> {
        if self.read_zeroes {
            crate::iovec::zero(bufs);
        }
        self.wait();
        Ok(())
    }
    fn write(&self, _off: u64, _buf: &[u8]) -> Result<(), i32> {
        self.wait();
        Ok(())
    }
    fn flush(&self) -> Result<(), i32> {
        self.wait();
        Ok(())
    }
    /// No `bdrv_co_pdiscard`: the block layer answers it with success.
    fn discard(&self, _off: u64, _len: u64) -> Result<(), i32> {
        Ok(())
    }
    /// No `bdrv_co_pwrite_zeroes`: the block layer writes a zeroed buffer.
    fn write_zeroes(&self, _off: u64, _len: u64, _may_unmap: bool) -> Result<(), i32> {
        self.wait();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> NullOptions {
        NullOptions {
            filename: None,
            size: None,
            latency_ns: None,
            read_zeroes: None,
        }
    }

    #[test]
    fn defaults_and_errors() {
        let d = NullDriver::open("null-co", opts()).unwrap();
        assert_eq!(d.size().unwrap(), 1 << 30);
        assert_eq!(d.filename(), "null-co://");
        let e = NullDriver::open(
            "null-co",
            NullOptions {
                filename: Some("null-aio://".into()),
                ..opts()
            },
        );
        assert_eq!(
            e.err().unwrap().msg,
            "The only allowed filename for this driver is 'null-co://'"
        );
        let e = NullDriver::open(
            "null-aio",
            NullOptions {
                latency_ns: Some(-1),
                ..opts()
            },
        );
        assert_eq!(e.err().unwrap().msg, "latency-ns is invalid");
    }

    #[test]
    fn reads_leave_or_zero_the_buffer() {
        let d = NullDriver::open("null-co", opts()).unwrap();
        let mut b = [7u8; 16];
        d.format_io().unwrap().read(0, &mut b).unwrap();
        assert_eq!(b, [7u8; 16]);
        let d = NullDriver::open(
            "null-co",
            NullOptions {
                read_zeroes: Some(true),
                size: Some(4096),
                ..opts()
            },
        )
        .unwrap();
        d.format_io().unwrap().read(0, &mut b).unwrap();
        assert_eq!(b, [0u8; 16]);
        assert!(d.filename().starts_with("json:{\"driver\": \"null-co\""));
    }
}
