//! The one loop over a paged [`ScanCursor`] scan, local or remote.
//!
//! Anti-entropy lists keys page by page on both sides of an exchange, a join
//! pulls its gained ranges page by page from an old replica, and a
//! decommission pushes its lost ranges page by page; they differ only in
//! where a page comes from and what is done with it. Keeping the cursor
//! bookkeeping here means one place decides when a scan is over, and one
//! place refuses a page that would make it go on forever.

use shoal_merkle::TokenRange;

use crate::rpc::ScanRequest;
use crate::store::{ScanCursor, ScanPage};

/// A page whose cursor is not past the cursor it was asked from.
///
/// An honest scan returns the last key it took as the next cursor, so the
/// cursor rises with every page; a page that repeats (or moves back) the
/// cursor, as a faulty or hostile peer's might, would otherwise be asked for
/// again and again without end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a scan page did not move past its cursor (range {range}): the scan would never end")]
pub struct StalledCursor {
    /// The range index of the cursor that did not advance.
    pub range: u32,
}

/// One paged scan of some ranges: hands out the [`ScanRequest`] of each page
/// in turn and follows the cursor of each page it is given back, until a
/// page has no next cursor.
///
/// Drive it as
///
/// ```text
/// while let Some(request) = scan.next_request() {
///     let page = fetch(request)?;   // the local store or a peer
///     scan.advance(&page)?;         // ends the scan, or refuses a stall
///     consume(page)?;
/// }
/// ```
///
/// It is a state machine rather than a function taking async callbacks so
/// that the callers' futures stay `Send` (an async closure borrowing the
/// caller's state is not, as of Rust 1.95, when its future is spawned).
#[derive(Debug)]
pub(crate) struct PagedScan {
    ranges: Vec<TokenRange>,
    max_keys: u32,
    values: bool,
    /// Where the next page starts (`None`: at the beginning).
    cursor: Option<ScanCursor>,
    done: bool,
}

impl PagedScan {
    /// A scan of `ranges` from `start` (`None`: from the beginning), in
    /// pages of at most `max_keys` keys, with the states when `values`.
    pub(crate) fn new(
        ranges: &[TokenRange],
        start: Option<ScanCursor>,
        max_keys: u32,
        values: bool,
    ) -> Self {
        Self {
            ranges: ranges.to_vec(),
            max_keys,
            values,
            cursor: start,
            done: false,
        }
    }

    /// The request for the next page, or `None` once a page without a next
    /// cursor was taken.
    pub(crate) fn next_request(&self) -> Option<ScanRequest> {
        (!self.done).then(|| ScanRequest {
            ranges: self.ranges.clone(),
            cursor: self.cursor.clone(),
            max_keys: self.max_keys,
            values: self.values,
        })
    }

    /// Takes the page answering the last request: the scan goes on from its
    /// cursor, or ends when it has none. A page whose cursor does not move
    /// past the one it was asked from is refused, and the scan stays where
    /// it was.
    pub(crate) fn advance(&mut self, page: &ScanPage) -> Result<(), StalledCursor> {
        match (&self.cursor, &page.next) {
            (Some(from), Some(to)) if !advances(from, to) => Err(StalledCursor { range: to.range }),
            (_, Some(to)) => {
                self.cursor = Some(to.clone());
                Ok(())
            }
            (_, None) => {
                self.done = true;
                Ok(())
            }
        }
    }
}

/// Whether `to` is past `from` in scan order: a later range, or a later key
/// of the same range.
fn advances(from: &ScanCursor, to: &ScanCursor) -> bool {
    (to.range, to.after.as_slice()) > (from.range, from.after.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ScanEntry;

    #[derive(Debug, PartialEq)]
    enum TestError {
        Stalled(StalledCursor),
        Fetch(&'static str),
        Each(&'static str),
    }

    impl From<StalledCursor> for TestError {
        fn from(e: StalledCursor) -> Self {
            TestError::Stalled(e)
        }
    }

    fn cursor(range: u32, after: &[u8]) -> ScanCursor {
        ScanCursor {
            range,
            after: after.to_vec(),
        }
    }

    fn page(keys: &[&str], next: Option<ScanCursor>) -> ScanPage {
        ScanPage {
            entries: keys
                .iter()
                .map(|k| ScanEntry {
                    key: k.as_bytes().to_vec(),
                    digest: [0; 32],
                    siblings: None,
                })
                .collect(),
            next,
        }
    }

    /// Runs a scan over canned pages the way the callers do; returns the
    /// requests asked, the keys consumed and the outcome.
    fn run(
        start: Option<ScanCursor>,
        mut pages: Vec<Result<ScanPage, TestError>>,
        fail_each_at: Option<usize>,
    ) -> (Vec<ScanRequest>, Vec<String>, Result<(), TestError>) {
        pages.reverse();
        let mut asked = Vec::new();
        let mut seen = Vec::new();
        let mut scan = PagedScan::new(&[TokenRange::FULL], start, 7, true);
        let outcome = (|| {
            // Bounded: a scan that never ended would fail here, not hang.
            for _ in 0..100 {
                let Some(request) = scan.next_request() else {
                    return Ok(());
                };
                asked.push(request);
                let page = pages
                    .pop()
                    .unwrap_or(Err(TestError::Fetch("asked past the end")))?;
                scan.advance(&page)?;
                if Some(seen.len()) == fail_each_at {
                    return Err(TestError::Each("refused"));
                }
                seen.extend(
                    page.entries
                        .into_iter()
                        .map(|e| String::from_utf8(e.key).unwrap()),
                );
            }
            Err(TestError::Fetch("did not end"))
        })();
        (asked, seen, outcome)
    }

    #[test]
    fn follows_each_cursor_until_a_page_has_none() {
        let (asked, seen, outcome) = run(
            None,
            vec![
                Ok(page(&["a", "b"], Some(cursor(0, b"b")))),
                Ok(page(&["c"], Some(cursor(1, b"a")))),
                Ok(page(&["d"], None)),
            ],
            None,
        );
        assert_eq!(outcome, Ok(()));
        assert_eq!(seen, ["a", "b", "c", "d"]);
        let cursors: Vec<_> = asked.iter().map(|r| r.cursor.clone()).collect();
        assert_eq!(
            cursors,
            [None, Some(cursor(0, b"b")), Some(cursor(1, b"a"))],
            "each page is asked from the previous page's cursor"
        );
        assert!(asked
            .iter()
            .all(|r| r.max_keys == 7 && r.values && r.ranges == [TokenRange::FULL]));
    }

    #[test]
    fn resumes_from_the_start_cursor() {
        let (asked, seen, outcome) = run(Some(cursor(0, b"m")), vec![Ok(page(&["n"], None))], None);
        assert_eq!(outcome, Ok(()));
        assert_eq!(seen, ["n"]);
        assert_eq!(asked[0].cursor, Some(cursor(0, b"m")));
    }

    #[test]
    fn a_page_that_does_not_advance_stops_the_scan() {
        for stuck in [cursor(0, b"m"), cursor(0, b"a"), cursor(0, b"")] {
            let (asked, seen, outcome) = run(
                None,
                vec![
                    Ok(page(&["m"], Some(cursor(0, b"m")))),
                    Ok(page(&["m"], Some(stuck.clone()))),
                    Ok(page(&["never"], None)),
                ],
                None,
            );
            assert_eq!(
                outcome,
                Err(TestError::Stalled(StalledCursor { range: 0 })),
                "{stuck:?}"
            );
            assert_eq!(asked.len(), 2);
            assert_eq!(seen, ["m"], "the stalled page is not consumed");
        }
        // An earlier range with a later key is still a step back.
        let (_, _, outcome) = run(
            Some(cursor(2, b"a")),
            vec![Ok(page(&["z"], Some(cursor(1, b"z"))))],
            None,
        );
        assert_eq!(outcome, Err(TestError::Stalled(StalledCursor { range: 1 })));
    }

    #[test]
    fn an_error_of_either_callback_ends_the_scan() {
        let (asked, seen, outcome) = run(
            None,
            vec![
                Ok(page(&["a"], Some(cursor(0, b"a")))),
                Err(TestError::Fetch("peer down")),
            ],
            None,
        );
        assert_eq!(outcome, Err(TestError::Fetch("peer down")));
        assert_eq!((asked.len(), seen), (2, vec!["a".to_string()]));

        let (asked, seen, outcome) = run(
            None,
            vec![
                Ok(page(&["a"], Some(cursor(0, b"a")))),
                Ok(page(&["b"], None)),
            ],
            Some(1),
        );
        assert_eq!(outcome, Err(TestError::Each("refused")));
        assert_eq!((asked.len(), seen), (2, vec!["a".to_string()]));
    }
}
