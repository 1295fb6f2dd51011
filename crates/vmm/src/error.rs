//! Errors that stop the machine from being built or from running on.

#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error("cannot open /dev/kvm: {0} (is KVM available and are you root or in the kvm group?)")]
    KvmOpen(#[source] kvm_ioctls::Error),
    #[error("{0} failed: {1}")]
    Kvm(&'static str, #[source] kvm_ioctls::Error),
    #[error("guest memory: {0}")]
    Memory(String),
    #[error("{0}")]
    Boot(String),
    #[error("{what} '{path}': {err}")]
    File {
        what: &'static str,
        path: String,
        err: std::io::Error,
    },
    /// A `-kernel`/`-initrd` file that is not a regular file or does not fit guest RAM.
    #[error("{what} '{path}': {err}")]
    Image {
        what: &'static str,
        path: String,
        err: boot::ImageFileError,
    },
    #[error("{0}")]
    Pidfile(#[from] crate::pidfile::PidfileError),
    #[error("device setup: {0}")]
    Device(String),
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("vCPU {0}: {1}")]
    Guest(usize, String),
}
