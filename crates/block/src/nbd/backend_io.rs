//! An export's I/O: through its BlockBackend's route, as QEMU's export
//! goes through `exp->blk` (`blk_pread`, `blk_pwrite`, ...), so a job's
//! filter in the route sees what clients write, and a pivot moves the
//! export with the devices.

use std::sync::Arc;

use super::export::ExportIo;
use super::gate::Gate;
use super::status;
use crate::io::BlockBackend;
use crate::job::nodeio::NodeIo;
use crate::node::FormatIo;

pub(crate) struct BackendIo {
    pub bb: BlockBackend,
    pub gate: Arc<Gate>,
}

impl BackendIo {
    fn io(&self) -> NodeIo {
        NodeIo::of_route((*self.bb.inner.route()).clone())
    }

    /// `BDRV_O_UNMAP` (`discard=unmap`) on the root: otherwise a discard
    /// does nothing and a zero write does not deallocate.
    fn unmap(&self) -> bool {
        self.bb.discard_enabled()
    }
}

impl ExportIo for BackendIo {
    fn read(&self, off: u64, buf: &mut [u8]) -> Result<(), i32> {
        let _p = self.gate.enter();
        self.io().read(off, buf)
    }

    fn write(&self, off: u64, buf: &[u8]) -> Result<(), i32> {
        let _p = self.gate.enter();
        self.io().write(off, buf)
    }

    fn write_zeroes(&self, off: u64, len: u64, may_unmap: bool) -> Result<(), i32> {
        let _p = self.gate.enter();
        self.io().write_zeroes(off, len, may_unmap && self.unmap())
    }

    /// `bdrv_co_pdiscard`: nothing to do without `discard=unmap`.
    fn discard(&self, off: u64, len: u64) -> Result<(), i32> {
        let _p = self.gate.enter();
        if !self.unmap() {
            return Ok(());
        }
        self.io().discard(off, len)
    }

    fn flush(&self) -> Result<(), i32> {
        let _p = self.gate.enter();
        self.io().flush()
    }

    fn block_status(&self, off: u64, len: u64) -> Result<(u32, u64), i32> {
        let _p = self.gate.enter();
        match self.bb.root() {
            Some(r) => status::base_allocation(&r, off, len),
            None => Err(libc::ENOMEDIUM),
        }
    }
}
