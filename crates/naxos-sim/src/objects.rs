//! The simulated object clients (naxos-tango): a bank of accounts moved
//! between by transactions (some tried once, some retried), snapshot reads
//! of every balance, a counter added to and read, a register
//! compare-and-set, and checkpointer rounds with trim. Each operation is
//! recorded in the shared history for the bank and counter checkers. An
//! abort is a definite outcome (nothing applied); anything else that failed
//! is `Unknown`. The operations and the final reads also run outside the
//! simulator, against real servers (crates/naxos/tests/faults.rs), through
//! [`Recorder`].

use crate::rng::Rng;
use crate::workload::{connect, now};
use crate::Shared;
use naxos_check::{Event, ListOp, Op, Outcome, Violation};
use naxos_tango::{Error, Runtime};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Accounts in the bank.
pub const ACCOUNTS: usize = 4;
/// What each account opens with.
pub const OPENING_BALANCE: i64 = 100;
/// The counter the clients add to.
pub const COUNTER: &str = "hits";
/// The map whose keys hold the list-append workload's lists.
pub const LISTS: &str = "lists";
/// The register the clients compare-and-set.
pub const REGISTER: &str = "leader";
/// The bank's map.
const BANK: &str = "bank";
/// The invariant a replayer breaks when it finds a commit record's reads no
/// longer hold: the sequencer granted a token it should have refused.
pub const REPLAY: &str = "replay";
/// Longest an operation may take before it is recorded as unknown.
const OP_TIMEOUT: Duration = Duration::from_secs(30);

fn account(i: usize) -> String {
    format!("acct{i}")
}

fn unknown(e: impl std::fmt::Display) -> Outcome {
    Outcome::Unknown { error: e.to_string() }
}

/// A runtime for workload client `index` (ids unique within a run).
async fn runtime(index: u32, seeds: Vec<String>) -> Result<Runtime, naxos_client::Error> {
    let client = connect(seeds, index.is_multiple_of(2)).await?;
    Ok(Runtime::with_id(client, u128::from(index) + 1))
}

/// Where object operations are recorded: the simulator's shared history
/// (simulated time), or a real-process test's (its own clock).
pub trait Recorder: Send + Sync {
    /// The history's clock now, in nanoseconds.
    fn now(&self) -> u64;
    /// Records one finished operation.
    fn push(&self, event: Event);
}

impl Recorder for Shared {
    fn now(&self) -> u64 {
        now()
    }

    fn push(&self, event: Event) {
        Shared::push(self, event);
    }
}

async fn timed<F: std::future::Future<Output = Outcome>>(rec: &impl Recorder, client: u32, op: Op, fut: F) {
    let start = rec.now();
    let outcome = tokio::time::timeout(OP_TIMEOUT, fut).await.unwrap_or_else(|_| unknown("timed out"));
    rec.push(Event { client, start, end: rec.now(), op, outcome });
}

/// Every balance in one snapshot (a read-only transaction).
async fn balances(rt: &Runtime) -> Outcome {
    let bank = rt.map(BANK);
    let read = rt
        .transaction(|tx| {
            let mut out = Vec::new();
            for (k, v) in tx.list(&bank)? {
                out.push((String::from_utf8_lossy(&k).into_owned(), naxos_tango::parse::<i64>(&v)?));
            }
            Ok(out)
        })
        .await;
    match read {
        Ok(done) => Outcome::Accounts { balances: done.value },
        Err(e) => unknown(e),
    }
}

/// Opens the accounts (once, atomically) if nobody has yet.
async fn open_accounts(rt: &Runtime) -> Result<(), Error> {
    let bank = rt.map(BANK);
    rt.transaction(|tx| {
        if tx.get(&bank, account(0))?.is_none() {
            for i in 0..ACCOUNTS {
                tx.put(&bank, account(i), OPENING_BALANCE.to_string());
            }
        }
        Ok(())
    })
    .await
    .map(|_| ())
}

/// One object client: `ops` seeded operations.
pub async fn run(
    shared: Shared,
    index: u32,
    seed: u64,
    ops: usize,
    seeds: Vec<String>,
    found: Arc<Mutex<Vec<Violation>>>,
) -> turmoil::Result {
    let mut rng = Rng::new(seed, 2000 + u64::from(index));
    tokio::time::sleep(Duration::from_millis(rng.range(20, 120))).await;
    let rt = runtime(index, seeds).await?;
    let options = Options { trim: true, opens: index == 0, stop: None };
    operations(&shared, &rt, index, &mut rng, ops, &options).await;
    check_replay(&rt, index, &found);
    Ok(())
}

/// How an object client runs, besides its seed.
#[derive(Clone, Debug)]
pub struct Options {
    /// Whether checkpointer rounds trim the log below the checkpoints.
    pub trim: bool,
    /// Whether this client opens the accounts first (one client of a run does).
    pub opens: bool,
    /// Stops the operations early once set.
    pub stop: Option<Arc<std::sync::atomic::AtomicBool>>,
}

/// Up to `ops` seeded operations of object client `index` on `rt`, each
/// recorded in `rec` as client `index`. The caller checks the runtime's
/// replay afterwards ([`replay_violation`]).
pub async fn operations(rec: &impl Recorder, rt: &Runtime, index: u32, rng: &mut Rng, ops: usize, options: &Options) {
    if options.opens {
        // Opening may fail under faults; the bank checker only judges
        // snapshots once the accounts exist, and transfers need them.
        for _ in 0..20 {
            if open_accounts(rt).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let bank = rt.map(BANK);
    let counter = rt.counter(COUNTER);
    let total = OPENING_BALANCE * ACCOUNTS as i64;
    for n in 0..ops {
        if options.stop.as_ref().is_some_and(|s| s.load(std::sync::atomic::Ordering::Relaxed)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(rng.range(0, 40))).await;
        match rng.range(0, 100) {
            40..=49 => {
                // A list-append transaction (Elle): 1 to 3 micro-operations
                // on lists kept as comma-separated values in map keys.
                let lists = rt.map(LISTS);
                let mut ops = Vec::new();
                for k in 0..rng.range(1, 4) {
                    let key = format!("l{}", rng.range(0, 4));
                    if rng.chance(0.5) {
                        ops.push(ListOp::Append { key, value: u64::from(index) * 1_000_000 + n as u64 * 10 + k });
                    } else {
                        ops.push(ListOp::Read { key });
                    }
                }
                let op = Op::ListTxn { ops: ops.clone() };
                timed(rec, index, op, async {
                    let body = |tx: &mut naxos_tango::Tx<'_>| {
                        let mut reads = Vec::new();
                        for op in &ops {
                            let key = match op {
                                ListOp::Append { key, .. } | ListOp::Read { key } => key,
                            };
                            let now = tx.get(&lists, key)?.unwrap_or_default();
                            let mut list: Vec<u64> = String::from_utf8_lossy(&now)
                                .split(',')
                                .filter(|s| !s.is_empty())
                                .map(|s| s.parse::<u64>().map_err(|e| Error::Decode(e.to_string())))
                                .collect::<Result<_, _>>()?;
                            match op {
                                ListOp::Append { value, .. } => {
                                    list.push(*value);
                                    let text: Vec<String> = list.iter().map(u64::to_string).collect();
                                    tx.put(&lists, key.clone(), text.join(","));
                                }
                                ListOp::Read { .. } => reads.push((key.clone(), list)),
                            }
                        }
                        Ok(reads)
                    };
                    match rt.try_transaction(body).await {
                        Ok(done) => Outcome::Lists { reads: done.value },
                        Err(Error::Aborted { cause, .. }) => Outcome::Aborted { cause: cause.to_string() },
                        Err(Error::NotApplied(why)) => Outcome::Aborted { cause: format!("not applied: {why}") },
                        Err(e) => unknown(e),
                    }
                })
                .await;
            }
            0..=39 => {
                let from = rng.range(0, ACCOUNTS as u64) as usize;
                let to = (from + 1 + rng.range(0, ACCOUNTS as u64 - 1) as usize) % ACCOUNTS;
                let amount = rng.range(1, 30) as i64;
                let once = rng.chance(0.5);
                let op = Op::Transfer { from: account(from), to: account(to), amount };
                timed(rec, index, op, async {
                    let body = |tx: &mut naxos_tango::Tx<'_>| {
                        let (Some(a), Some(b)) = (tx.get(&bank, account(from))?, tx.get(&bank, account(to))?) else {
                            return Ok(());
                        };
                        let (a, b): (i64, i64) = (naxos_tango::parse(&a)?, naxos_tango::parse(&b)?);
                        if a >= amount {
                            tx.put(&bank, account(from), (a - amount).to_string());
                            tx.put(&bank, account(to), (b + amount).to_string());
                        }
                        Ok(())
                    };
                    let result = if once { rt.try_transaction(body).await } else { rt.transaction(body).await };
                    match result {
                        Ok(_) => Outcome::Committed,
                        Err(Error::Aborted { cause, .. }) => Outcome::Aborted { cause: cause.to_string() },
                        Err(Error::NotApplied(why)) => Outcome::Aborted { cause: format!("not applied: {why}") },
                        Err(e) => unknown(e),
                    }
                })
                .await;
            }
            50..=69 => timed(rec, index, Op::Balances { total }, balances(rt)).await,
            70..=73 => {
                // A checkpointer round with trim: every object checkpointed
                // once it is 40 positions behind, the log trimmed below the
                // oldest latest checkpoint (runtimes that fall behind reload).
                let policy = naxos_tango::Policy { behind_positions: 40, trim: options.trim };
                if let Err(e) = rt.checkpoint_round(&policy).await {
                    tracing::debug!("checkpointer round: {e}");
                }
            }
            74..=87 => {
                // Distinct deltas, so a doubled add shows.
                let delta = 1 + (u64::from(index) * 1000 + n as u64) as i64 % 97;
                let op = Op::CounterAdd { counter: COUNTER.into(), delta };
                timed(rec, index, op, async {
                    match counter.add(delta).await {
                        Ok(_) => Outcome::Done,
                        Err(e) => unknown(e),
                    }
                })
                .await;
            }
            88..=93 => {
                // Compare-and-set of a register from the value just read to
                // a value unique in the run: the successful ones must form
                // one chain of versions.
                let register = rt.register(REGISTER);
                let Ok(now) = register.get().await else { continue };
                let expected = now.map(|v| String::from_utf8_lossy(&v).into_owned());
                let new = format!("c{index}-{n}");
                let op = Op::RegisterCas { register: REGISTER.into(), expected: expected.clone(), new: new.clone() };
                timed(rec, index, op, async {
                    match register.cas(expected.as_deref().map(str::as_bytes), Some(new.into())).await {
                        Ok(true) => Outcome::Committed,
                        Ok(false) => Outcome::Aborted { cause: "the value differed".into() },
                        Err(Error::Aborted { cause, .. }) => Outcome::Aborted { cause: cause.to_string() },
                        Err(Error::NotApplied(why)) => Outcome::Aborted { cause: format!("not applied: {why}") },
                        Err(e) => unknown(e),
                    }
                })
                .await;
            }
            _ => {
                let op = Op::CounterRead { counter: COUNTER.into() };
                timed(rec, index, op, async {
                    match counter.get().await {
                        Ok(v) => Outcome::Value { value: v },
                        Err(e) => unknown(e),
                    }
                })
                .await;
            }
        }
    }
}

/// The violation this runtime's replay found, if it found commit records
/// whose reads no longer held.
pub fn replay_violation(rt: &Runtime, index: u32) -> Option<Violation> {
    let invalid = rt.stats().invalid_commits.load(std::sync::atomic::Ordering::Relaxed);
    (invalid > 0).then(|| {
        let why = format!(
            "client {index} replayed {invalid} commit record(s) whose reads no longer held: the sequencer granted tokens it should have refused"
        );
        Violation::new(REPLAY, why, vec![])
    })
}

/// Reports the commit records this runtime's replay found invalid.
fn check_replay(rt: &Runtime, index: u32, found: &Mutex<Vec<Violation>>) {
    if let Some(v) = replay_violation(rt, index) {
        if let Ok(mut f) = found.lock() {
            f.push(v);
        }
    }
}

/// The quiescent phase's reader: the balances and the counter once more,
/// retried until they answer (everything is healed by then), and the settle
/// check's own appends read back (the durability checker wants them read).
pub async fn finish(
    shared: Shared,
    index: u32,
    seeds: Vec<String>,
    found: Arc<Mutex<Vec<Violation>>>,
) -> turmoil::Result {
    let rt = runtime(index, seeds).await?;
    let appended: Vec<u64> = shared
        .snapshot()
        .iter()
        .filter_map(|e| match e.outcome {
            Outcome::Appended { position } => Some(position),
            _ => None,
        })
        .collect();
    for p in appended {
        for _ in 0..20 {
            let start = now();
            let outcome = crate::workload::read_outcome(rt.client().read(naxos_client::Position(p)).await);
            if !matches!(outcome, Outcome::Unknown { .. }) {
                shared.push(Event { client: index, start, end: now(), op: Op::Read { position: p }, outcome });
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let result = final_reads(&shared, &rt, index).await;
    // This runtime replayed the whole bank from the start.
    check_replay(&rt, index, &found);
    result.map_err(Into::into)
}

/// The balances and the counter read once more by `rt` (recorded as client
/// `index`), each retried until it answers: for the quiescent phase, once
/// every fault is healed.
pub async fn final_reads(rec: &impl Recorder, rt: &Runtime, index: u32) -> Result<(), String> {
    let total = OPENING_BALANCE * ACCOUNTS as i64;
    for _ in 0..50 {
        let start = rec.now();
        let outcome = balances(rt).await;
        if !matches!(outcome, Outcome::Unknown { .. }) {
            rec.push(Event { client: index, start, end: rec.now(), op: Op::Balances { total }, outcome });
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let counter = rt.counter(COUNTER);
    let mut last = String::new();
    for _ in 0..50 {
        let start = rec.now();
        let read = counter.get().await;
        if let Err(e) = &read {
            last = e.to_string();
        }
        if let Ok(value) = read {
            let op = Op::CounterRead { counter: COUNTER.into() };
            rec.push(Event { client: index, start, end: rec.now(), op, outcome: Outcome::Value { value } });
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("the final counter read never answered; last error: {last}"))
}
