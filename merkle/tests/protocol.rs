//! The diff state machine on what it emits and how it treats bad responses.

use shoal_merkle::{
    Answer, Diff, DiffOptions, DiffOutcome, LeafRange, MerkleError, MerkleTree, NodeId, Query,
    Response, Step, TokenRange, TreeShape,
};

fn shape() -> TreeShape {
    TreeShape::new(16, 4).unwrap()
}

/// Two trees that differ in the key at `3 << 60` only.
fn pair() -> (MerkleTree, MerkleTree) {
    let mut a = MerkleTree::new(shape());
    let mut b = MerkleTree::new(shape());
    for i in 0..16u64 {
        a.insert(i << 60, &i.to_be_bytes(), &[1; 32]).unwrap();
        b.insert(i << 60, &i.to_be_bytes(), &[1; 32]).unwrap();
    }
    b.update(3 << 60, &3u64.to_be_bytes(), Some(&[1; 32]), Some(&[2; 32]))
        .unwrap();
    (a, b)
}

fn exact() -> DiffOptions {
    DiffOptions {
        adaptive: false,
        ..DiffOptions::default()
    }
}

#[test]
fn emits_range_hash_then_children_level_by_level() {
    let (a, b) = pair();
    let (mut diff, first) = Diff::new(&a, TokenRange::FULL, exact()).unwrap();
    assert_eq!(first.round, 0);
    assert_eq!(
        first.query,
        Query::RangeHash {
            range: LeafRange { start: 0, end: 0 }
        }
    );
    let mut request = first;
    let mut asked = Vec::new();
    let report = loop {
        match diff.handle(&a, b.answer(&request).unwrap()).unwrap() {
            Step::Send(next) => {
                asked.push(next.query.clone());
                request = next;
            }
            Step::Done(report) => break report,
        }
    };
    // The full ring's cover is the root, whose hash is the range hash: the diff goes
    // straight to the root's children, then one differing node per level.
    let leaf = shape().leaf_of(3 << 60);
    let parents: Vec<Query> = (1..=4u8)
        .rev()
        .map(|level| Query::Children {
            parents: vec![NodeId {
                level,
                index: leaf >> (4 * u32::from(level)),
            }],
        })
        .collect();
    assert_eq!(asked, parents);
    assert_eq!(
        report.outcome,
        DiffOutcome::Segments(vec![LeafRange {
            start: leaf,
            end: leaf + 1
        }])
    );
    assert_eq!(report.rounds, 5);
    assert_eq!(report.hashes_received, 4 * 16);
    assert_eq!(
        diff.handle(&a, b.answer(&request).unwrap()),
        Err(MerkleError::DiffFinished)
    );
}

#[test]
fn partial_range_compares_its_cover_nodes() {
    let (a, b) = pair();
    // Leaves 0x2fff..0x4001: two leaves at the edges plus whole nodes in between.
    let range = TokenRange {
        start: 0x2fff << 48,
        end: 0x4001 << 48,
    };
    let (mut diff, request) = Diff::new(&a, range, exact()).unwrap();
    let Step::Send(next) = diff.handle(&a, b.answer(&request).unwrap()).unwrap() else {
        panic!("ranges differ");
    };
    assert_eq!(
        next.query,
        Query::Nodes {
            nodes: shape().cover(LeafRange {
                start: 0x2fff,
                end: 0x4001
            })
        }
    );
}

#[test]
fn bad_responses_are_rejected_and_change_nothing() {
    let (a, b) = pair();
    let (mut diff, request) = Diff::new(&a, TokenRange::FULL, exact()).unwrap();
    let good = b.answer(&request).unwrap();

    let stray = Response {
        round: 7,
        ..good.clone()
    };
    assert_eq!(
        diff.handle(&a, stray),
        Err(MerkleError::WrongRound {
            expected: 0,
            got: 7
        })
    );
    let wrong_kind = Response {
        round: 0,
        answer: Answer::Hashes { hashes: vec![] },
    };
    assert_eq!(
        diff.handle(&a, wrong_kind),
        Err(MerkleError::WrongAnswerKind {
            expected: "RangeHash"
        })
    );
    let other_shape = MerkleTree::new(TreeShape::new(20, 4).unwrap());
    assert_eq!(
        diff.handle(&other_shape, good.clone()),
        Err(MerkleError::DiffTreeMismatch)
    );

    // Still waiting for round 0: the good answer goes through.
    let Step::Send(request) = diff.handle(&a, good).unwrap() else {
        panic!("trees differ");
    };
    let good = b.answer(&request).unwrap();
    let Answer::Hashes { hashes } = &good.answer else {
        panic!("hashes asked");
    };
    for len in [0, hashes.len() - 1, hashes.len() + 1, 100_000] {
        let wrong = Response {
            round: good.round,
            answer: Answer::Hashes {
                hashes: vec![[0; 32]; len],
            },
        };
        assert_eq!(
            diff.handle(&a, wrong),
            Err(MerkleError::WrongHashCount {
                expected: hashes.len(),
                got: len
            })
        );
    }
    let wrong_kind = Response {
        round: good.round,
        answer: Answer::RangeHash {
            hash: [0; 32],
            count: 0,
        },
    };
    assert_eq!(
        diff.handle(&a, wrong_kind),
        Err(MerkleError::WrongAnswerKind { expected: "Hashes" })
    );
    assert!(matches!(diff.handle(&a, good), Ok(Step::Send(_))));
}

#[test]
fn rejects_unaligned_ranges() {
    let (a, _) = pair();
    assert_eq!(
        Diff::new(
            &a,
            TokenRange {
                start: 1,
                end: 1 << 48
            },
            DiffOptions::default()
        )
        .map(|_| ()),
        Err(MerkleError::UnalignedRange {
            position: 1,
            shift: 48
        })
    );
}

#[test]
fn lying_peer_cannot_make_the_diff_loop_or_panic() {
    // A peer that answers every hash as "different" (all ones) and claims an absurd
    // count drives the diff to the leaves of the whole ring at most: it still ends.
    let (tree, _) = pair();
    for options in [exact(), DiffOptions::default()] {
        let outcome = lie_to(&tree, options);
        if options.adaptive {
            // Listing the whole ring, one way or the other.
            assert!(matches!(
                outcome,
                DiffOutcome::FullListing | DiffOutcome::Segments(_)
            ));
        } else {
            assert_eq!(
                outcome,
                DiffOutcome::Segments(vec![LeafRange { start: 0, end: 0 }])
            );
        }
    }
}

fn lie_to(tree: &MerkleTree, options: DiffOptions) -> DiffOutcome {
    let (mut diff, mut request) = Diff::new(tree, TokenRange::FULL, options).unwrap();
    let mut rounds = 0;
    loop {
        rounds += 1;
        assert!(rounds < 10_000);
        let answer = match &request.query {
            Query::RangeHash { .. } => Answer::RangeHash {
                hash: [1; 32],
                count: u64::MAX,
            },
            Query::Nodes { nodes } => Answer::Hashes {
                hashes: vec![[1; 32]; nodes.len()],
            },
            Query::Children { parents } => Answer::Hashes {
                hashes: vec![[1; 32]; parents.len() * 16],
            },
        };
        let response = Response {
            round: request.round,
            answer,
        };
        match diff.handle(tree, response).unwrap() {
            Step::Send(next) => request = next,
            Step::Done(report) => return report.outcome,
        }
    }
}

#[test]
fn adaptive_diff_gives_up_when_a_listing_is_cheaper() {
    // Two keys each side: listing them beats any hash exchange.
    let mut a = MerkleTree::new(shape());
    let mut b = MerkleTree::new(shape());
    a.insert(1 << 60, b"x", &[1; 32]).unwrap();
    b.insert(2 << 60, b"y", &[1; 32]).unwrap();
    let (mut diff, request) = Diff::new(&a, TokenRange::FULL, DiffOptions::default()).unwrap();
    let Step::Done(report) = diff.handle(&a, b.answer(&request).unwrap()).unwrap() else {
        panic!("should stop at once");
    };
    assert_eq!(report.outcome, DiffOutcome::FullListing);
    assert_eq!(report.rounds, 1);
}
