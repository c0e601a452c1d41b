//! The driver fed by hand: every answer a cluster could give, and the
//! command it must lead to. The layout servers are real `Acceptor`s.

use super::*;
use crate::paxos::Acceptor;

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Three nodes, one chain of three, each a sequencer and a layout server.
fn genesis() -> Layout {
    let n = names(&["a", "b", "c"]);
    Layout::initial("c1", &n, 3, 1, n.clone(), n.clone())
}

/// Two chains of two.
fn striped() -> Layout {
    let n = names(&["a", "b", "c", "d"]);
    Layout::initial("c1", &n, 2, 2, n.clone(), names(&["a", "b", "c"]))
}

fn sealed(tail: u64, next: Option<u64>) -> Answer<SealAnswer> {
    Answer::Ok(SealAnswer { tail, sequencer_next: next })
}

fn failed() -> Answer<SealAnswer> {
    Answer::Failed("unreachable".into())
}

/// The layout servers: each votes as a real acceptor that holds `chosen`.
struct Servers {
    acceptors: Vec<Acceptor>,
    chosen: Layout,
}

impl Servers {
    fn new(n: usize, chosen: Layout) -> Servers {
        Servers { acceptors: vec![Acceptor::default(); n], chosen }
    }

    fn vote(&mut self, message: &Message) -> Vec<Answer<Option<Vote>>> {
        self.acceptors
            .iter_mut()
            .map(|a| {
                let (vote, _) = match message {
                    Message::Prepare { ballot, .. } => a.prepare(Some(&self.chosen), *ballot),
                    Message::Accept { rank, layout, .. } => a.accept(Some(&self.chosen), *rank, layout),
                };
                Answer::Ok(Some(vote))
            })
            .collect()
    }
}

/// Answers Paxos rounds until a commit comes out; returns it.
fn run_paxos(d: &mut Driver, mut command: Command, servers: &mut Servers) -> Command {
    for _ in 0..10 {
        match command {
            Command::Paxos { message, .. } => {
                let votes = servers.vote(&message);
                command = d.on(Event::Votes(votes));
            }
            Command::Sleep(_) => command = d.on(Event::Slept),
            other => return other,
        }
    }
    panic!("Paxos did not end: {command:?}")
}

/// Drives a driver from its start through the seal answers `seal`.
fn up_to_seal(d: &mut Driver, l: &Layout) -> Command {
    let c = d.start();
    assert_eq!(c, Command::GetLayouts { addrs: names(&["a"]) });
    let c = d.on(Event::Layouts(vec![Answer::Ok(Some(l.clone()))]));
    let Command::Seal { nodes, epoch, .. } = &c else { panic!("expected a seal, got {c:?}") };
    assert_eq!(*epoch, l.epoch + 1);
    assert_eq!(nodes, &l.all_nodes());
    c
}

fn stream(n: u128) -> StreamId {
    StreamId(n)
}

#[test]
fn a_next_epoch_seals_proposes_commits_and_bootstraps_the_sequencer_from_every_unit() {
    let l0 = genesis();
    let mut d = Driver::new(names(&["a"]), Change::NextEpoch, 3, None, 7);
    up_to_seal(&mut d, &l0);
    // The highest sealed tail ends the segment; the sequencer had handed out 12.
    let c = d.on(Event::Sealed(vec![sealed(10, Some(12)), sealed(9, None), sealed(10, None)]));
    let mut servers = Servers::new(3, l0.clone());
    let c = run_paxos(&mut d, c, &mut servers);
    let Command::Commit { layout, nodes } = c else { panic!("expected a commit, got {c:?}") };
    assert_eq!(layout.epoch, 1);
    assert_eq!(layout.segments.last().map(|s| s.start), Some(10));
    assert_eq!(layout.tail_floor, 12, "a primary that recovers by itself starts above what was handed out");
    assert_eq!(nodes, l0.all_nodes());
    let c = d.on(Event::Committed(vec![true, false, true]));
    assert_eq!(c, Command::UnitTails { layout: layout.clone(), units: layout.log_units() });
    let tails = vec![
        Answer::Ok(TailAnswer { tail: 10, token_ceiling: 0, token_ceiling_by: 0, streams: vec![(stream(1), 4)] }),
        Answer::Failed("down".into()),
        // One unit holds a later entry of stream 1, and a durable ceiling above the rest.
        Answer::Ok(TailAnswer {
            tail: 10,
            token_ceiling: 15,
            token_ceiling_by: 0,
            streams: vec![(stream(1), 8), (stream(2), 3)],
        }),
    ];
    let c = d.on(Event::UnitTails(tails));
    assert_eq!(
        c,
        Command::Bootstrap {
            layout: layout.clone(),
            sequencer: "a".into(),
            tail: 15,
            streams: vec![(stream(1), 8), (stream(2), 3)],
        }
    );
    let c = d.on(Event::Bootstrapped(Answer::Ok(())));
    let Command::Done(Ok(decided)) = c else { panic!("expected success, got {c:?}") };
    assert_eq!(decided.layout, layout);
    assert_eq!(decided.before, l0);
    assert_eq!(decided.sealed_at, Position(10));
    assert_eq!(decided.not_committed, vec!["b".to_string()]);
    assert!(decided.rolled_forward.is_empty());
}

#[test]
fn the_segment_ends_at_the_highest_tail_of_every_chain_and_waits_for_one_replica_of_each() {
    let l0 = striped();
    let mut d = Driver::new(names(&["a"]), Change::NextEpoch, 2, None, 7);
    up_to_seal(&mut d, &l0);
    // Chain c,d gave no answer: the seal is not enough, the driver backs off.
    let c = d.on(Event::Sealed(vec![sealed(7, None), sealed(7, None), failed(), failed()]));
    assert!(matches!(c, Command::Sleep(_)), "{c:?}");
    let c = d.on(Event::Slept);
    let Command::GetLayouts { addrs } = &c else { panic!("{c:?}") };
    assert!(addrs.contains(&"d".to_string()), "a retry asks every known node: {addrs:?}");
    let c = d.on(Event::Layouts(vec![Answer::Ok(Some(l0.clone())); addrs.len()]));
    assert!(matches!(c, Command::Seal { .. }));
    // One replica of c,d (with the higher tail, 11) answers now, but d is
    // in the new segment and did not: it cannot take new positions.
    let c = d.on(Event::Sealed(vec![sealed(7, None), sealed(7, None), sealed(11, None), failed()]));
    let Command::Done(Err(DoneError::Unavailable(why))) = c else { panic!("{c:?}") };
    assert!(why.contains("gave up after 2 attempts") && why.contains("d did not answer the seal"), "{why}");
}

#[test]
fn the_new_segment_starts_above_every_tail_its_replicas_hold() {
    let l0 = striped();
    let mut d = Driver::new(names(&["a"]), Change::NextEpoch, 2, None, 7);
    up_to_seal(&mut d, &l0);
    let c = d.on(Event::Sealed(vec![sealed(7, None), sealed(4, None), sealed(11, None), sealed(3, None)]));
    let c = run_paxos(&mut d, c, &mut Servers::new(3, l0.clone()));
    let Command::Commit { layout, .. } = c else { panic!("{c:?}") };
    assert_eq!(layout.segments.last().map(|s| s.start), Some(11));
}

#[test]
fn a_node_sealed_at_a_later_epoch_sends_the_driver_back_to_learn_the_layout() {
    let l0 = genesis();
    let mut d = Driver::new(names(&["a"]), Change::NextEpoch, 3, None, 7);
    up_to_seal(&mut d, &l0);
    let newer = Answer::Refused(ErrorCode::WrongEpoch, 4, "sealed at 4".into(), "b: sealed at 4".into());
    let c = d.on(Event::Sealed(vec![sealed(1, None), newer, sealed(1, None)]));
    assert!(matches!(c, Command::Sleep(_)), "{c:?}");
    let c = d.on(Event::Slept);
    let Command::GetLayouts { addrs } = &c else { panic!("{c:?}") };
    let mut l4 = l0.clone();
    l4.epoch = 4;
    let c = d.on(Event::Layouts(addrs.iter().map(|_| Answer::Ok(Some(l4.clone()))).collect()));
    assert!(matches!(c, Command::Seal { epoch: 5, .. }), "{c:?}");
}

#[test]
fn a_layout_another_driver_got_chosen_is_committed_and_the_change_applied_on_top_of_it() {
    let l0 = genesis();
    let mut d = Driver::new(names(&["a"]), Change::Sequencer("c".into()), 3, None, 7);
    up_to_seal(&mut d, &l0);
    let c = d.on(Event::Sealed(vec![sealed(5, Some(5)), sealed(5, None), sealed(5, None)]));
    // A rival's layout for epoch 1 was accepted by a majority before our prepare.
    let mut servers = Servers::new(3, l0.clone());
    let mut rival = l0.clone();
    rival.epoch = 1;
    rival.sequencers = names(&["b", "a", "c"]);
    let rank = crate::paxos::Rank { round: 1, proposer: 99 };
    for a in servers.acceptors.iter_mut().take(2) {
        a.prepare(Some(&l0), crate::paxos::Ballot { epoch: Epoch(1), rank });
        a.accept(Some(&l0), rank, &rival);
    }
    let c = run_paxos(&mut d, c, &mut servers);
    let Command::Commit { layout, .. } = c else { panic!("{c:?}") };
    assert_eq!(layout, rival, "the rival's layout is the one chosen, so it is the one committed");
    let c = d.on(Event::Committed(vec![true; 3]));
    let ok = Answer::Ok(TailAnswer { tail: 5, token_ceiling: 0, token_ceiling_by: 0, streams: vec![] });
    let c = match c {
        Command::UnitTails { units, .. } => d.on(Event::UnitTails(vec![ok; units.len()])),
        other => panic!("{other:?}"),
    };
    assert!(matches!(&c, Command::Bootstrap { sequencer, .. } if sequencer == "b"), "{c:?}");
    // Then ours, on top of the rival's, at epoch 2.
    let c = d.on(Event::Bootstrapped(Answer::Ok(())));
    assert!(matches!(c, Command::Sleep(_)), "{c:?}");
    let Command::GetLayouts { addrs } = d.on(Event::Slept) else { panic!() };
    let c = d.on(Event::Layouts(addrs.iter().map(|_| Answer::Ok(Some(rival.clone()))).collect()));
    assert!(matches!(c, Command::Seal { epoch: 2, .. }), "{c:?}");
    let c = d.on(Event::Sealed(vec![sealed(5, Some(5)), sealed(5, None), sealed(5, None)]));
    let mut servers = Servers::new(3, rival.clone());
    let Command::Commit { layout, .. } = run_paxos(&mut d, c, &mut servers) else { panic!() };
    assert_eq!(layout.epoch, 2);
    assert_eq!(layout.sequencers.first().map(String::as_str), Some("c"));
    d.on(Event::Committed(vec![true; 3]));
    let ok = Answer::Ok(TailAnswer { tail: 5, token_ceiling: 0, token_ceiling_by: 0, streams: vec![] });
    d.on(Event::UnitTails(vec![ok; 3]));
    let Command::Done(Ok(decided)) = d.on(Event::Bootstrapped(Answer::Ok(()))) else { panic!() };
    assert_eq!(decided.rolled_forward, vec![Epoch(1)]);
    assert_eq!(decided.before, l0);
}

#[test]
fn a_change_that_does_not_fit_is_refused_before_anything_is_sealed() {
    let n = names(&["a"]);
    let l0 = Layout::initial("c1", &n, 1, 1, n.clone(), n.clone());
    let mut d = Driver::new(names(&["a"]), Change::Remove("a".into()), 3, None, 7);
    d.start();
    let c = d.on(Event::Layouts(vec![Answer::Ok(Some(l0))]));
    assert!(matches!(c, Command::Done(Err(DoneError::Refused(Refusal::LastReplica { .. })))), "{c:?}");
}

#[test]
fn an_added_unit_is_enrolled_sealed_and_caught_up_before_the_seal_then_for_the_rest_after_it() {
    let l0 = genesis();
    let change = Change::Add { addr: "e".into(), stripe: None };
    let mut d = Driver::new(names(&["a"]), change, 3, None, 7);
    d.start();
    let c = d.on(Event::Layouts(vec![Answer::Ok(Some(l0.clone()))]));
    assert_eq!(c, Command::Enroll { addr: "e".into(), layout: l0.clone() });
    let c = d.on(Event::Enrolled(Answer::Ok(())));
    assert_eq!(c, Command::SealOne { addr: "e".into(), layout: l0.clone() });
    let c = d.on(Event::SealedOne(Answer::Ok(())));
    let Command::CatchUp { layout, to: CopyTo::Tail, from, .. } = &c else { panic!("{c:?}") };
    assert!(from.is_empty(), "the first copy covers every segment from its start");
    assert_eq!(layout.epoch, 1, "copies carry the next epoch");
    let copied = CatchUp { copied: 20, ..Default::default() };
    // The copy stopped at the tail, 20; position 12 was open (no replica
    // held it): a writer holding its token may still write it.
    let c = d.on(Event::Copied { result: Ok(copied), diverged: vec![], resume: vec![12] });
    let Command::Seal { nodes, .. } = &c else { panic!("{c:?}") };
    assert_eq!(nodes, &names(&["a", "b", "c", "e"]), "the joining unit is sealed with the others");
    let c = d.on(Event::Sealed(vec![sealed(30, None), sealed(30, None), sealed(30, None), sealed(20, None)]));
    assert!(
        matches!(&c, Command::CatchUp { to: CopyTo::At(Position(30)), from, .. } if from == &vec![12]),
        "only what the first copy left, from the first open position: {c:?}"
    );
    let copied = CatchUp { copied: 10, ..Default::default() };
    let c = d.on(Event::Copied { result: Ok(copied), diverged: vec![], resume: vec![30] });
    let Command::Commit { layout, .. } = run_paxos(&mut d, c, &mut Servers::new(3, l0.clone())) else { panic!() };
    assert!(layout.segments.iter().all(|s| s.stripes[0].chain.contains(&"e".to_string())));
    d.on(Event::Committed(vec![true; 4]));
    let ok = Answer::Ok(TailAnswer { tail: 30, token_ceiling: 0, token_ceiling_by: 0, streams: vec![] });
    d.on(Event::UnitTails(vec![ok; 4]));
    let Command::Done(Ok(decided)) = d.on(Event::Bootstrapped(Answer::Ok(()))) else { panic!() };
    assert_eq!(decided.transfer.copied, 30);
}

#[test]
fn a_unit_of_another_cluster_is_refused_and_a_driver_abandoned_after_the_seal_stops_there() {
    let l0 = genesis();
    let mut d = Driver::new(names(&["a"]), Change::Add { addr: "e".into(), stripe: None }, 3, None, 7);
    d.start();
    d.on(Event::Layouts(vec![Answer::Ok(Some(l0.clone()))]));
    let other = Answer::Refused(ErrorCode::WrongCluster, 0, "cluster c2".into(), "e: cluster c2".into());
    let c = d.on(Event::Enrolled(other));
    assert!(matches!(c, Command::Done(Err(DoneError::Refused(_)))), "{c:?}");

    let mut d = Driver::new(names(&["a"]), Change::NextEpoch, 3, Some(Abandon::AfterSeal), 7);
    up_to_seal(&mut d, &l0);
    let c = d.on(Event::Sealed(vec![sealed(1, None); 3]));
    assert!(matches!(c, Command::Done(Err(DoneError::Unavailable(_)))), "{c:?}");
}

#[test]
fn the_sequencer_is_not_bootstrapped_unless_every_chain_head_gave_its_stream_tails() {
    let l0 = striped();
    let a = Answer::Ok(TailAnswer { tail: 3, token_ceiling: 0, token_ceiling_by: 0, streams: vec![] });
    let down = || Answer::Failed("down".into());
    let e = bootstrap_state(&l0, 0, &l0.log_units(), vec![a.clone(), a.clone(), down(), a.clone()]).unwrap_err();
    assert!(e.contains("chain head c"), "{e}");
    assert!(bootstrap_state(&l0, 0, &l0.log_units(), vec![a.clone(), down(), a, down()]).is_ok());
}
