//! The management decisions, driven by hand: heartbeats in, actions out.

use super::*;
use crate::plan::next_layout;
use naxos_wire::Position;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn three() -> Layout {
    let a: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    Layout::initial("c1", &a, 3, 1, a.clone(), a.clone())
}

fn seen(cluster: &str) -> Seen {
    Seen {
        node_id: 1,
        cluster_id: cluster.into(),
        management: true,
        log_unit: true,
        suspects: Vec::new(),
        unit_failed: false,
    }
}

/// `m` hears every one of `alive` at `now`; they suspect every other node
/// it watches (they see the same failures).
fn beat(m: &mut Manager, layout: &Layout, now: Duration, alive: &[&str]) {
    let targets = m.targets(layout, now);
    let silent: Vec<String> = targets.iter().filter(|t| !alive.contains(&t.as_str())).cloned().collect();
    for a in alive {
        m.heard(a, now, Seen { suspects: silent.clone(), ..seen(&layout.cluster_id) });
    }
}

/// Heartbeats every 100 ms from `from` to `to` (inclusive of `from`).
fn beats(m: &mut Manager, layout: &Layout, from: u64, to: u64, alive: &[&str]) {
    let mut t = from;
    while t <= to {
        beat(m, layout, ms(t), alive);
        t += 100;
    }
}

#[test]
fn a_silent_node_is_suspected_after_the_failure_timeout_and_not_before() {
    let mut d = Detector::new(ms(1000));
    let addrs = vec!["x".to_string()];
    d.watch(&addrs, ms(0));
    assert!(!d.suspected("x", ms(999)), "a node just watched gets the timeout to answer");
    assert!(d.suspected("x", ms(1000)));
    d.heard("x", ms(1500), seen("c"));
    assert!(d.alive("x", ms(1500)) && !d.suspected("x", ms(2499)));
    assert!(d.suspected("x", ms(2500)));
    assert_eq!(d.suspects(ms(2500)), ["x"]);
    assert!(!d.suspected("unknown", ms(9999)), "only watched nodes are suspected");
}

#[test]
fn the_first_layout_server_that_answers_acts_and_a_minority_never_does() {
    let l = three();
    let mut b = Manager::new("b", Settings::default(), 1);
    beat(&mut b, &l, ms(0), &["a", "c"]);
    assert_eq!(b.acting(&l, ms(0), true).as_deref(), Some("a"));
    assert_eq!(b.decide(&l, ms(0)), None, "b is not the acting manager");
    // a falls silent: b takes over.
    beats(&mut b, &l, 100, 1100, &["c"]);
    assert_eq!(b.acting(&l, ms(1100), true).as_deref(), Some("b"));
    // b alone (a minority): nobody acts for it.
    let mut lone = Manager::new("b", Settings::default(), 1);
    beats(&mut lone, &l, 0, 1100, &[]);
    assert_eq!(lone.acting(&l, ms(1100), true), None);
    assert_eq!(lone.decide(&l, ms(1100)), None);
}

#[test]
fn a_failed_primary_sequencer_is_taken_out_and_the_next_takes_over() {
    let l = three();
    let mut a = Manager::new("b", Settings::default(), 1);
    beats(&mut a, &l, 0, 1000, &["c"]);
    let act = a.decide(&l, ms(1000)).expect("an action");
    assert_eq!(act.change, Change::TakeOut(vec!["a".into()]));
    assert!(act.reason.contains("a suspected"), "{}", act.reason);
    let next = next_layout(&l, &act.change, Position(7)).unwrap();
    assert_eq!(next.sequencers[0], "b");
}

#[test]
fn every_failed_node_goes_in_one_change_and_a_live_sequencer_takes_over() {
    let a: Vec<String> = ["a", "b", "c", "d", "e"].iter().map(|s| s.to_string()).collect();
    let l = Layout::initial("c1", &a[..3], 3, 1, vec!["d".into(), "e".into(), "a".into()], a.clone());
    let mut m = Manager::new("a", Settings::default(), 1);
    beats(&mut m, &l, 0, 1000, &["b", "c"]);
    let act = m.decide(&l, ms(1000)).expect("an action");
    assert_eq!(act.change, Change::TakeOut(vec!["d".into(), "e".into()]));
    assert!(act.reason.contains("a takes over as the sequencer"), "{}", act.reason);
    let next = next_layout(&l, &act.change, Position(4)).unwrap();
    assert_eq!(next.sequencers, ["a"]);
    // Two of three units at once: one change (the new chain names no dead replica).
    let mut m = Manager::new("a", Settings::default(), 1);
    beats(&mut m, &l, 0, 1000, &["d", "e"]);
    let act = m.decide(&l, ms(1000)).expect("an action");
    assert_eq!(act.change, Change::TakeOut(vec!["b".into(), "c".into()]));
    assert_eq!(next_layout(&l, &act.change, Position(4)).unwrap().segments[1].stripes[0].chain, ["a"]);
}

#[test]
fn a_failed_log_unit_is_taken_out_and_put_back_once_it_answers_for_a_while() {
    let l = three();
    let mut m = Manager::new("a", Settings::default(), 1);
    beats(&mut m, &l, 0, 1000, &["b"]);
    let act = m.decide(&l, ms(1000)).expect("an action");
    assert_eq!(act.change, Change::TakeOut(vec!["c".into()]));
    m.finished(&act, Ok(()), ms(1000));
    let out = next_layout(&l, &act.change, Position(3)).unwrap();
    assert_eq!(m.decide(&out, ms(1100)), None, "c is away and silent: nothing to do");
    // c answers again: not before it has answered for a few heartbeats and
    // the first re-add delay (1 s) has passed.
    beats(&mut m, &out, 1100, 1900, &["b", "c"]);
    assert_eq!(m.decide(&out, ms(1900)), None, "damped: not before 1 s after it was taken out");
    beats(&mut m, &out, 2000, 2100, &["b", "c"]);
    let back = m.decide(&out, ms(2100)).expect("put back");
    assert_eq!(back.change, Change::Add { addr: "c".into(), stripe: Some(0) });
    assert!(back.reason.contains("c is back"), "{}", back.reason);
}

#[test]
fn a_node_that_keeps_failing_is_put_back_with_growing_delays() {
    let l = three();
    let mut m = Manager::new("a", Settings::default(), 1);
    let out = next_layout(&l, &Change::TakeOut(vec!["c".into()]), Position(3)).unwrap();
    let take = Action { change: Change::TakeOut(vec!["c".into()]), reason: String::new() };
    let add = Action { change: Change::Add { addr: "c".into(), stripe: Some(0) }, reason: String::new() };
    let mut t = ms(0);
    let mut delays = Vec::new();
    for _ in 0..8 {
        m.finished(&take, Ok(()), t);
        delays.push(m.readd_delay("c").unwrap());
        t += ms(5000);
        m.finished(&add, Ok(()), t);
        t += ms(5000); // fails again 5 s after it came back
    }
    assert_eq!(delays[..4], [ms(1000), ms(2000), ms(4000), ms(8000)]);
    assert_eq!(*delays.last().unwrap(), ms(60_000), "capped");
    // Back and stable for a minute: the next failure starts from 1 s again.
    t += ms(60_000);
    m.finished(&take, Ok(()), t);
    assert_eq!(m.readd_delay("c"), Some(ms(1000)));
    let _ = out;
}

#[test]
fn a_member_that_lost_its_data_is_taken_out_and_copied_in_full_when_back() {
    let l = three();
    let mut m = Manager::new("a", Settings::default(), 1);
    // c answers, but not bootstrapped: wiped (or not bootstrapped yet, for a
    // moment, while the cluster is bootstrapped: not taken out at once).
    for t in (0..1000).step_by(100) {
        m.targets(&l, ms(t));
        m.heard("b", ms(t), seen("c1"));
        m.heard("c", ms(t), seen(""));
        assert_eq!(m.decide(&l, ms(t)), None, "not within the failure timeout ({t} ms)");
    }
    m.targets(&l, ms(1000));
    m.heard("b", ms(1000), seen("c1"));
    m.heard("c", ms(1000), seen(""));
    let act = m.decide(&l, ms(1000)).expect("an action");
    assert_eq!(act.change, Change::TakeOut(vec!["c".into()]));
    assert!(act.reason.contains("without its data"), "{}", act.reason);
    m.finished(&act, Ok(()), ms(1000));
    let out = next_layout(&l, &act.change, Position(3)).unwrap();
    for t in (1100..=2500).step_by(100) {
        m.targets(&out, ms(t));
        m.heard("b", ms(t), seen("c1"));
        m.heard("c", ms(t), seen(""));
    }
    let back = m.decide(&out, ms(2500)).expect("put back");
    assert_eq!(back.change, Change::Add { addr: "c".into(), stripe: Some(0) });
    assert!(back.reason.contains("full copy"), "{}", back.reason);
}

#[test]
fn a_spare_takes_the_place_of_a_node_that_stays_away() {
    let l = three();
    let out = next_layout(&l, &Change::TakeOut(vec!["c".into()]), Position(3)).unwrap();
    let mut m = Manager::new("a", Settings::default(), 1);
    let mut t = 0;
    while t < 10_000 {
        m.spare("s", ms(t));
        beat(&mut m, &out, ms(t), &["b", "s"]);
        assert_eq!(m.decide(&out, ms(t)), None, "not before --spare-after (at {t} ms)");
        t += 100;
    }
    m.spare("s", ms(t));
    beat(&mut m, &out, ms(t), &["b", "s"]);
    let act = m.decide(&out, ms(t)).expect("the spare is used");
    assert_eq!(act.change, Change::Add { addr: "s".into(), stripe: Some(0) });
    // With the spare in, c coming back is let go rather than make four replicas.
    let full = next_layout(&out, &act.change, Position(9)).unwrap();
    let mut m = Manager::new("a", Settings::default(), 1);
    beats(&mut m, &full, 0, 2000, &["b", "c", "s"]);
    let act = m.decide(&full, ms(2000)).expect("an action");
    assert_eq!(act.change, Change::Remove("c".into()));
}

#[test]
fn a_failed_reconfiguration_backs_off_and_a_refused_one_is_not_retried_at_once() {
    let l = three();
    let mut m = Manager::new("a", Settings::default(), 7);
    beats(&mut m, &l, 0, 1000, &["b"]);
    let act = m.decide(&l, ms(1000)).expect("an action");
    m.finished(&act, Err(false), ms(1000));
    assert_eq!(m.decide(&l, ms(1000)), None, "backing off");
    beats(&mut m, &l, 1100, 3000, &["b"]);
    assert_eq!(m.decide(&l, ms(3000)).map(|a| a.change), Some(act.change.clone()), "tried again later");
    m.finished(&act, Err(true), ms(3000));
    assert_eq!(m.decide(&l, ms(3100)), None, "refused: not again for a while");
}

#[test]
fn a_node_only_the_manager_cannot_reach_is_not_taken_out() {
    // A bad link between a and c: b still hears c, so a does not act on it.
    let l = three();
    let mut m = Manager::new("a", Settings::default(), 1);
    for t in (0..=1500).step_by(100) {
        m.targets(&l, ms(t));
        m.heard("b", ms(t), seen("c1"));
    }
    assert!(m.detector.suspected("c", ms(1500)));
    assert_eq!(m.decide(&l, ms(1500)), None, "b does not suspect c");
    // b suspects c too: out.
    m.heard("b", ms(1600), Seen { suspects: vec!["c".into()], ..seen("c1") });
    assert_eq!(m.decide(&l, ms(1600)).map(|a| a.change), Some(Change::TakeOut(vec!["c".into()])));
}

#[test]
fn a_chains_last_replica_is_kept_so_that_the_others_can_go() {
    // Two chains, [b, c] and [a]; a and b fail; a is the last replica of
    // its chain: only b goes (with a in it, the change would be refused).
    let units: Vec<String> = ["b", "c", "a", "c"].iter().map(|s| s.to_string()).collect();
    let servers: Vec<String> = ["a", "b", "c", "d", "e"].iter().map(|s| s.to_string()).collect();
    let mut l = Layout::initial("c1", &units, 2, 2, vec!["d".into()], servers);
    l.segments[0].stripes[1].chain = vec!["a".into()];
    let mut m = Manager::new("c", Settings::default(), 1);
    beats(&mut m, &l, 0, 1000, &["d", "e"]);
    assert_eq!(m.decide(&l, ms(1000)).map(|a| a.change), Some(Change::TakeOut(vec!["b".into()])));
}

#[test]
fn a_node_whose_log_unit_failed_is_taken_out_and_does_not_manage() {
    let l = three();
    let mut m = Manager::new("b", Settings::default(), 1);
    m.targets(&l, ms(0));
    m.heard("a", ms(0), Seen { unit_failed: true, ..seen("c1") });
    m.heard("c", ms(0), seen("c1"));
    assert_eq!(m.acting(&l, ms(0), true).as_deref(), Some("b"), "a answers but its unit failed: b acts");
    let act = m.decide(&l, ms(0)).expect("an action");
    assert_eq!(act.change, Change::TakeOut(vec!["a".into()]));
    assert!(act.reason.contains("log unit failed"), "{}", act.reason);
}
