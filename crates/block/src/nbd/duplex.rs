//! A client conversation in memory, for tests and the fuzz targets: reads
//! come from what the client sent, writes collect what the server answers.

use std::io::{Cursor, Read, Write};

pub struct Duplex {
    pub input: Cursor<Vec<u8>>,
    pub output: Vec<u8>,
}

impl Duplex {
    pub fn new(input: Vec<u8>) -> Self {
        Duplex {
            input: Cursor::new(input),
            output: Vec::new(),
        }
    }
}

impl Read for Duplex {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Duplex {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs a whole connection (handshake, then requests) as the server's
/// connection thread does; the messages it would print are returned.
pub fn converse(d: &mut Duplex, exports: &dyn super::export::Exports) -> Result<(), String> {
    use super::negotiate::{negotiate, Outcome};
    match negotiate(d, exports) {
        Err(e) => Err(format!("option negotiation failed: {e}")),
        Ok(Outcome::Abort) => Ok(()),
        Ok(Outcome::Go(c)) => {
            super::transmit::transmit(d, &c).map_err(|e| format!("Disconnect client, due to: {e}"))
        }
    }
}
