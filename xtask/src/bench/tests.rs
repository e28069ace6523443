//! Argument checking and the report of `cargo xtask bench`.

use super::*;
use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: BenchArgs,
}

fn parse(line: &str) -> Result<Plan, String> {
    let argv = std::iter::once("bench").chain(line.split_whitespace());
    let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
    plan(&cli.args)
}

#[track_caller]
fn check_err(line: &str, needle: &str) {
    match parse(line) {
        Ok(p) => panic!("{line:?} was accepted: {p:?}"),
        Err(e) => assert!(e.contains(needle), "{line:?}: {e:?} lacks {needle:?}"),
    }
}

#[test]
fn defaults_match_the_issue_workload() {
    let p = parse("").unwrap();
    assert_eq!((p.clients, p.keys, p.value_size), (50, 10_000, 100));
    assert_eq!(p.phases, vec![("writes", 0.0), ("reads", 1.0)]);
    assert_eq!(p.shoal, ShoalAt::Own(3, (3, 2, 2)));
    assert!(!p.compare);
}

#[test]
fn options_are_applied() {
    let p = parse("--read-ratio 0.9 --n 5 --w 3 --r 1 --nodes 5 --compare --duration 3").unwrap();
    assert_eq!(p.phases, vec![("mixed", 0.9)]);
    assert_eq!(p.shoal, ShoalAt::Own(5, (5, 3, 1)));
    assert!(p.compare);
    assert_eq!(p.duration, Duration::from_secs(3));
    let p = parse("--url http://127.0.0.1:8080/ --w 1").unwrap();
    assert_eq!(
        p.shoal,
        ShoalAt::Url(
            "127.0.0.1:8080".parse().unwrap(),
            "?w=1".into(),
            String::new()
        )
    );
    let p = parse("--url 127.0.0.1:9000 --w 3 --r 2").unwrap();
    assert_eq!(
        p.shoal,
        ShoalAt::Url(
            "127.0.0.1:9000".parse().unwrap(),
            "?w=3".into(),
            "?r=2".into()
        )
    );
}

#[test]
fn bad_arguments_are_refused_with_a_reason() {
    check_err("--duration 0", "--duration");
    check_err("--clients 0", "--clients");
    check_err("--clients 100 --keys 99", "at least --clients");
    check_err("--value-size 0", "--value-size");
    check_err("--read-ratio 1.5", "within 0..=1");
    check_err("--read-ratio NaN", "within 0..=1");
    check_err("--read-ratio -0.1", "unexpected argument");
    check_err("--w 4", "W <= N");
    check_err("--r 0", "1 <= R");
    check_err("--n 5", "--nodes");
    check_err("--url http://127.0.0.1:1 --n 3", "--n sets up");
    check_err("--url https://127.0.0.1:1", "only http://");
    check_err("--url http://127.0.0.1:1/v1", "without a path");
    check_err("--url nonsense", "--url");
    check_err("--url 127.0.0.1:1 --w 0", "at least 1");
    check_err("--threads 0", "--threads");
    check_err("--clients x", "invalid value");
}

#[test]
fn report_has_ratios_against_the_first_system() {
    let mut fast = Stats {
        elapsed: Duration::from_secs(1),
        ..Stats::default()
    };
    let mut slow = Stats {
        elapsed: Duration::from_secs(1),
        ..Stats::default()
    };
    for _ in 0..300 {
        fast.put.record(1_000_000);
    }
    for _ in 0..100 {
        slow.put.record(2_000_000);
    }
    let outcomes = vec![
        Outcome {
            system: "a".into(),
            phases: vec![("writes", fast)],
        },
        Outcome {
            system: "b".into(),
            phases: vec![("writes", slow)],
        },
    ];
    let text = report(&parse("").unwrap(), &outcomes);
    assert!(
        text.contains("| a | 300 | 1.000 / 1.000 / 1.000 | - | - | 0 | - / - |"),
        "{text}"
    );
    assert!(text.contains("vs b"), "{text}");
    assert!(text.contains("3.00x"), "{text}");
}
