//! Range scans, apart from point reads: pages over wrapping ranges must
//! resume where they stopped and refuse cursors they did not hand out.

use super::*;

#[test]
fn range_scans_page_through_wrapping_ranges_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(
        dir.path(),
        "node-1",
        &small_tree_config(),
        Arc::new(SystemClock),
    )
    .unwrap();
    // Three buckets' keys: a scan of a range visits every bucket's.
    let keys: Vec<Vec<u8>> = (0..300u32)
        .map(|i| {
            keys::wire(
                ["default", "a", "b-2"][i as usize % 3],
                format!("key-{i}").as_bytes(),
            )
        })
        .collect();
    for k in &keys {
        s.coordinate(k, &Context::empty(), value("v"), 1, None)
            .unwrap();
    }
    // A wrapping range and a plain one.
    let ranges = [
        TokenRange {
            start: 0xC000_0000_0000_0000,
            end: 0x2000_0000_0000_0000,
        },
        TokenRange {
            start: 0x4000_0000_0000_0000,
            end: 0x6000_0000_0000_0000,
        },
    ];
    let mut expected: Vec<&Vec<u8>> = keys
        .iter()
        .filter(|k| {
            let p = keys::position(k);
            ranges.iter().any(|r| r.contains(p))
        })
        .collect();
    expected.sort();
    let mut got = Vec::new();
    let mut cursor = None;
    for _ in 0..100 {
        let page = s
            .scan_ranges(&ranges, cursor.as_ref(), 7, usize::MAX, true)
            .unwrap();
        assert!(page.entries.len() <= 7);
        for e in &page.entries {
            let stored = s.read(&e.key).unwrap().unwrap();
            assert_eq!(e.siblings.as_ref(), Some(&stored));
            assert_eq!(e.digest, digest_of(&stored.encode()));
        }
        got.extend(page.entries.into_iter().map(|e| e.key));
        cursor = page.next;
        if cursor.is_none() {
            break;
        }
    }
    assert!(cursor.is_none(), "the scan ended");
    assert_eq!(got.len(), expected.len(), "each key once");
    // Paging by bytes alone (one or two entries a page) visits the same keys.
    let mut by_bytes = Vec::new();
    let mut cursor = None;
    for _ in 0..1_000 {
        let page = s
            .scan_ranges(&ranges, cursor.as_ref(), usize::MAX, 80, true)
            .unwrap();
        assert!(!page.entries.is_empty() || page.next.is_none());
        by_bytes.extend(page.entries.into_iter().map(|e| e.key));
        cursor = page.next;
        if cursor.is_none() {
            break;
        }
    }
    by_bytes.sort();
    let mut sorted = got.clone();
    sorted.sort();
    assert_eq!(by_bytes, sorted);
    got.sort();
    assert_eq!(got.iter().collect::<Vec<_>>(), expected);
    let bad = ScanCursor {
        range: 5,
        after: vec![DATA; 9],
    };
    assert!(matches!(
        s.scan_ranges(&ranges, Some(&bad), 7, usize::MAX, false),
        Err(StoreError::BadCursor)
    ));
}
