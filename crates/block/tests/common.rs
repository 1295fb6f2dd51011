#![allow(dead_code)]
use std::path::PathBuf;

use serde_json::{Map, Value};

/// A fresh sparse image of `size` bytes, removed on drop.
pub struct TempImage(pub PathBuf);

impl TempImage {
    pub fn new(tag: &str, size: u64) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        // Under /var/tmp: a disk-backed fs (O_DIRECT works, unlike tmpfs).
        let p = PathBuf::from(format!(
            "/var/tmp/ferrovm-block-{}-{}-{tag}.img",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let f = std::fs::File::create(&p).unwrap();
        f.set_len(size).unwrap();
        TempImage(p)
    }
    pub fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempImage {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `-drive` options as the CLI hands them over (every value a string).
pub fn drive(kv: &[(&str, &str)]) -> Map<String, Value> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
        .collect()
}

pub fn json(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

/// Drive `d0` on `img` (raw, plus `extra` keys), attached like a virtio-blk device.
pub fn attached_drive(
    img: &TempImage,
    extra: &[(&str, &str)],
) -> (block::BlockGraph, block::BlockBackend) {
    let mut g = block::BlockGraph::new();
    let mut kv = vec![("file", img.path()), ("format", "raw")];
    kv.extend_from_slice(extra);
    g.add_drive("d0", &drive(&kv)).unwrap();
    let bb = g
        .attach(
            "d0",
            "/machine/peripheral/vd0/virtio-backend",
            block::AttachOptions::default(),
        )
        .unwrap();
    (g, bb)
}
