//! Which tables a compaction merges. A pure function of the tables' sizes, so that
//! the policy can be tested case by case without writing a table.

/// A compaction's input: the newest `tables` entries of the newest-first table list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Choice {
    /// How many of the newest tables to merge; at least 1.
    pub(super) tables: usize,
    /// Whether the merge reaches the oldest table. Only then may tombstones (and
    /// filtered values) vanish: nothing older exists for them to shadow.
    pub(super) bottom: bool,
}

/// The next compaction over tables of these `sizes` (newest first), or `None` if
/// none is due. `full` (an explicit `Engine::compact`) merges every table, whatever
/// the trigger.
///
/// Otherwise nothing is due below `trigger` tables (a trigger below 2 counts as 2,
/// since merging one table gains nothing), and the choice is the longest
/// newest-first run in which each next table is at most twice the run so far: similar
/// sizes merge, and a big old table is rewritten only when the newer data has grown
/// comparable, which keeps write amplification logarithmic. A run of one (the newest
/// table is far smaller than the next) would be no merge at all, so `trigger` tables
/// merge instead and the table count stays bounded.
pub(super) fn choose(sizes: &[u64], trigger: usize, full: bool) -> Option<Choice> {
    let n = sizes.len();
    let k = if full { n } else { due(sizes, trigger) };
    if k == 0 {
        return None;
    }
    Some(Choice {
        tables: k,
        bottom: k == n,
    })
}

/// How many of the newest tables a background compaction merges; 0 if none is due.
fn due(sizes: &[u64], trigger: usize) -> usize {
    let n = sizes.len();
    let trigger = trigger.max(2);
    if n < trigger {
        return 0;
    }
    let mut sum = sizes[0];
    let mut k = 1;
    while k < n && sizes[k] <= sum.saturating_mul(2) {
        sum += sizes[k];
        k += 1;
    }
    if k < 2 {
        k = trigger.min(n);
    }
    k
}

#[cfg(test)]
mod tests {
    use super::{choose, Choice};

    /// The case, table sizes newest first, trigger, `full`, and the expected choice as
    /// (tables, bottom).
    type Case = (
        &'static str,
        &'static [u64],
        usize,
        bool,
        Option<(usize, bool)>,
    );

    #[rustfmt::skip]
    const CASES: &[Case] = &[
        ("no tables", &[], 4, false, None),
        ("fewer tables than the trigger", &[10, 10, 10], 4, false, None),
        ("a trigger below 2 counts as 2: one table", &[10], 0, false, None),
        ("a trigger below 2 counts as 2: two tables", &[10, 10], 1, false, Some((2, true))),
        ("similar sizes all merge, down to the bottom", &[10, 10, 10, 10], 4, false, Some((4, true))),
        ("the run may be longer than the trigger", &[10, 10, 10, 10, 10, 10], 3, false, Some((6, true))),
        ("a big newest table takes in smaller older ones", &[100, 10, 10, 10], 4, false, Some((4, true))),
        ("the run stops before a table over twice its size", &[10, 10, 10, 1000], 4, false, Some((3, false))),
        ("exactly twice the run still joins it", &[10, 10, 40, 1000], 4, false, Some((3, false))),
        ("one byte more does not", &[10, 10, 41, 1000], 4, false, Some((2, false))),
        ("sizes growing by the limit all join", &[1, 2, 6, 18, 54], 2, false, Some((5, true))),
        ("a run of one falls back to trigger tables", &[1, 100, 100, 100, 100], 3, false, Some((3, false))),
        ("a fallback over every table reaches the bottom", &[1, 100, 100], 3, false, Some((3, true))),
        ("sizes near u64::MAX do not overflow the doubling", &[u64::MAX / 2 + 1, u64::MAX / 2], 2, false, Some((2, true))),
        ("full merges every table whatever the trigger", &[1, 1000], 10, true, Some((2, true))),
        ("full rewrites even a single table", &[10], 4, true, Some((1, true))),
        ("full with no tables has nothing to do", &[], 4, true, None),
    ];

    #[test]
    fn choices() {
        for &(case, sizes, trigger, full, want) in CASES {
            let want = want.map(|(tables, bottom)| Choice { tables, bottom });
            assert_eq!(choose(sizes, trigger, full), want, "{case}");
        }
    }
}
