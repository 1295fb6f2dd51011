//! Split-virtqueue test helpers shared by the virtio device tests.
