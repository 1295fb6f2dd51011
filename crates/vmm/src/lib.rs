//! ferrovm's virtual machine monitor: builds the machine described by a
//! [`cli::Config`] on KVM and runs it until it stops for good.

pub mod announce;
pub mod backend;
pub mod commands;
pub mod console;
pub mod controller;
pub mod cpu_features;
pub mod cpuid;
pub mod daemon;
pub mod devices;
pub mod error;
pub mod fdsets;
pub mod firmware_file;
pub mod kvm_stats;
pub mod machine;
pub mod memory;
pub mod memory_map;
pub mod messages;
pub mod network;
pub mod pidfile;
pub mod qom_types;
pub mod runstate;
pub mod sync;
pub mod vcpu;
pub mod vcpu_setup;
pub mod vm;

mod monitors;
pub mod qtest;
mod setup;

pub use error::VmmError;
pub use messages::Exit;
pub use setup::run;
