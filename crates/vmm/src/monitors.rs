//! From `-qmp`, `-mon` and `-chardev` to the QMP library's monitor specs,
//! and the `query-chardev` entries of the non-monitor chardevs.

use cli::{ChardevBackend, Config, MonitorMode, SocketAddress};

use crate::error::VmmError;

pub fn specs(config: &Config) -> Result<Vec<qmp::MonitorSpec>, VmmError> {
    let mut out = Vec::new();
    for mon in &config.monitors {
        let chardev = config.chardev(&mon.chardev_id).ok_or_else(|| {
            VmmError::Config(format!("-mon: chardev '{}' not found", mon.chardev_id))
        })?;
        let ChardevBackend::Socket(sock) = &chardev.backend else {
            return Err(VmmError::Config(format!(
                "-chardev {}: a QMP monitor needs a socket chardev (stdio and others are not supported by ferrovm)",
                chardev.id
            )));
        };
        let addr = match &sock.addr {
            SocketAddress::Unix(p) => qmp::MonitorAddr::Unix(p.clone()),
            SocketAddress::Tcp { host, port } => qmp::MonitorAddr::Tcp {
                host: host.clone(),
                port: port.to_string(),
            },
            SocketAddress::Fd(fd) => qmp::MonitorAddr::Fd(*fd),
        };
        out.push(qmp::MonitorSpec {
            label: chardev.id.clone(),
            addr,
            server: sock.server,
            wait: sock.server && sock.wait,
            mode: match mon.mode {
                MonitorMode::Control => qmp::MonitorMode::Control,
                MonitorMode::Readline => qmp::MonitorMode::Readline,
            },
        });
    }
    Ok(out)
}
