//! Unit tests of the pieces that need no image file.

use super::cache::Lru;
use super::compress::inflate_cluster;
use super::header::Header;

#[test]
fn lru_evicts_the_least_recently_used_table() {
    let mut c: Lru<u32> = Lru::new(2);
    c.insert(0x1000, 1, false);
    c.insert(0x2000, 2, true);
    assert!(c.find(0x1000).is_some());
    let v = c.victim().unwrap();
    assert_eq!(c.ents[v].off, 0x2000);
    assert_eq!(c.dirty_slots().len(), 1);
}

fn header_with_table(table: Vec<(u8, u8, String)>) -> Header {
    Header {
        version: 3,
        backing_file_offset: 0,
        backing_file_size: 0,
        cluster_bits: 16,
        size: 0,
        crypt_method: 0,
        l1_size: 0,
        l1_table_offset: 0,
        refcount_table_offset: 0,
        refcount_table_clusters: 1,
        nb_snapshots: 0,
        snapshots_offset: 0,
        incompatible_features: 0,
        compatible_features: 0,
        autoclear_features: 0,
        refcount_order: 4,
        header_length: 112,
        compression_type: 0,
        backing_file: None,
        backing_format: None,
        feature_table: table,
    }
}

#[test]
fn unsupported_feature_names_come_from_the_image_table() {
    // report_unsupported_feature: named bits first, the rest as a mask.
    let h = header_with_table(vec![(0, 4, "extended L2 entries".into())]);
    assert_eq!(
        h.unsupported_message((1 << 4) | (1 << 9)),
        "Unsupported qcow2 feature(s): extended L2 entries, Unknown incompatible feature: 200"
    );
    // Without a table (clusters <= 4k), QEMU's own names are used.
    let h = header_with_table(vec![]);
    assert_eq!(
        h.unsupported_message(1 << 2),
        "Unsupported qcow2 feature(s): external data file"
    );
}

#[test]
fn garbage_compressed_data_is_an_error() {
    assert!(inflate_cluster(&[0xff; 100], 65536).is_err());
    // A valid raw-deflate stream of one stored block of 512 zero bytes.
    let mut s = vec![0x01, 0x00, 0x02, 0xff, 0xfd];
    s.extend_from_slice(&[0u8; 512]);
    assert_eq!(inflate_cluster(&s, 512).unwrap(), vec![0u8; 512]);
    // Too short for the cluster.
    assert!(inflate_cluster(&s, 1024).is_err());
}
