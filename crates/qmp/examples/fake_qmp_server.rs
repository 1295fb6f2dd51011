//! A QMP server backed by `qmp::testing::FakeVm` (answers like
//! `qemu-system-x86_64 -machine none -S`), for trying clients against the
//! protocol layer: `fake_qmp_server unix:/tmp/f.sock [tcp:127.0.0.1:4444 ...]`.
//! Append `,wait` to block until a client connects; `client:` connects out.
use std::time::Duration;

use mio::{Events, Poll};
use qmp::testing::FakeVm;
use qmp::{MonitorAddr, MonitorMode, MonitorSet, MonitorSpec};

fn main() -> std::io::Result<()> {
    let mut specs = Vec::new();
    for (n, arg) in std::env::args().skip(1).enumerate() {
        let (arg, wait) = match arg.strip_suffix(",wait") {
            Some(a) => (a.to_string(), true),
            None => (arg, false),
        };
        let (arg, server) = match arg.strip_prefix("client:") {
            Some(a) => (a.to_string(), false),
            None => (arg, true),
        };
        let addr = if let Some(p) = arg.strip_prefix("unix:") {
            MonitorAddr::Unix(p.into())
        } else if let Some(hp) = arg.strip_prefix("tcp:") {
            let (h, p) = hp.rsplit_once(':').expect("tcp:HOST:PORT");
            MonitorAddr::Tcp {
                host: h.into(),
                port: p.into(),
            }
        } else if let Some(fd) = arg.strip_prefix("fd:") {
            MonitorAddr::Fd(fd.parse().expect("fd:N"))
        } else {
            panic!("unknown monitor {arg}");
        };
        specs.push(MonitorSpec {
            label: MonitorSpec::compat_label(n),
            addr,
            server,
            wait,
            mode: MonitorMode::Control,
        });
    }
    let mut vm = FakeVm::default();
    let mut mons = MonitorSet::new(specs)?;
    mons.wait_for_clients()?;
    let mut poll = Poll::new()?;
    mons.register(poll.registry(), 0)?;
    let mut events = Events::with_capacity(64);
    loop {
        poll.poll(&mut events, mons.poll_timeout())?;
        mons.run_timers();
        for ev in events.iter() {
            if mons.handles(ev.token()) {
                mons.on_event(ev, &mut vm);
            }
        }
        if vm.quit_requested {
            mons.flush(Duration::from_secs(1));
            return Ok(());
        }
    }
}
